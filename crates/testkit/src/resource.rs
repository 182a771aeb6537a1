//! The resource types the simulated API server knows: their URL plural, group, version and
//! kind, and whether they live in a namespace.

/// One resource type served by the simulated cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// `v1` namespaces (cluster scoped).
    Namespaces,
    /// `v1` pods.
    Pods,
    /// `v1` secrets.
    Secrets,
    /// `v1` configmaps (read by the kubelet for `configMapKeyRef`).
    ConfigMaps,
    /// `v1` persistentvolumeclaims.
    PersistentVolumeClaims,
    /// `v1` events.
    Events,
    /// `batch/v1` jobs.
    Jobs,
    /// `coordination.k8s.io/v1` leases (the engine's per-agent guard across processes).
    Leases,
}

impl Resource {
    /// Every resource, in a stable order.
    pub const ALL: [Resource; 8] = [
        Resource::Namespaces,
        Resource::Pods,
        Resource::Secrets,
        Resource::ConfigMaps,
        Resource::PersistentVolumeClaims,
        Resource::Events,
        Resource::Jobs,
        Resource::Leases,
    ];

    /// The lower-case plural used in URLs and RBAC rules (`jobs`).
    pub fn plural(self) -> &'static str {
        match self {
            Resource::Namespaces => "namespaces",
            Resource::Pods => "pods",
            Resource::Secrets => "secrets",
            Resource::ConfigMaps => "configmaps",
            Resource::PersistentVolumeClaims => "persistentvolumeclaims",
            Resource::Events => "events",
            Resource::Jobs => "jobs",
            Resource::Leases => "leases",
        }
    }

    /// The API group (`""` for the core group).
    pub fn group(self) -> &'static str {
        match self {
            Resource::Jobs => "batch",
            Resource::Leases => "coordination.k8s.io",
            _ => "",
        }
    }

    /// The `apiVersion` objects of this resource carry.
    pub fn api_version(self) -> &'static str {
        match self {
            Resource::Jobs => "batch/v1",
            Resource::Leases => "coordination.k8s.io/v1",
            _ => "v1",
        }
    }

    /// The `kind` of one object.
    pub fn kind(self) -> &'static str {
        match self {
            Resource::Namespaces => "Namespace",
            Resource::Pods => "Pod",
            Resource::Secrets => "Secret",
            Resource::ConfigMaps => "ConfigMap",
            Resource::PersistentVolumeClaims => "PersistentVolumeClaim",
            Resource::Events => "Event",
            Resource::Jobs => "Job",
            Resource::Leases => "Lease",
        }
    }

    /// Whether objects live in a namespace.
    pub fn namespaced(self) -> bool {
        !matches!(self, Resource::Namespaces)
    }

    /// `jobs.batch` / `secrets`: how upstream names the resource in error messages.
    pub fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// `Job.batch` / `Secret`: how upstream names the kind in validation errors.
    pub fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_owned(),
            group => format!("{}.{group}", self.kind()),
        }
    }

    /// Whether objects carry `metadata.generation` (spec-bearing workload objects).
    pub(crate) fn has_generation(self) -> bool {
        matches!(self, Resource::Pods | Resource::Jobs)
    }

    /// Looks a resource up by an object's `kind`.
    pub fn from_kind(kind: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.kind() == kind)
    }

    /// Looks a resource up by its group and plural, as found in a request path.
    pub fn from_path(group: &str, plural: &str) -> Option<Resource> {
        Resource::ALL
            .into_iter()
            .find(|r| r.group() == group && r.plural() == plural)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names_match_upstream_wording() {
        assert_eq!(Resource::Jobs.qualified(), "jobs.batch");
        assert_eq!(Resource::Secrets.qualified(), "secrets");
        assert_eq!(Resource::Jobs.qualified_kind(), "Job.batch");
        assert_eq!(
            Resource::from_path("batch", "jobs"),
            Some(Resource::Jobs),
            "jobs are found under the batch group"
        );
        assert_eq!(Resource::from_path("", "jobs"), None);
    }
}
