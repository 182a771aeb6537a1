//! `networkPolicyEgress` entries: where an agent may connect besides DNS and Paperclip.

use super::EgressRule;

/// `CIDR[:port[,port...]]`; an IPv6 CIDR takes ports after `]:` (`[::/0]:443`).
pub(super) fn parse(text: &str) -> Option<EgressRule> {
    let (cidr, ports) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((cidr, "")) => (cidr, None),
            Some((cidr, ports)) => (cidr, Some(ports.strip_prefix(':')?)),
            None => return None,
        },
        None if text.matches(':').count() > 1 => (text, None),
        None => match text.split_once(':') {
            Some((cidr, ports)) => (cidr, Some(ports)),
            None => (text, None),
        },
    };
    let (addr, prefix) = cidr.split_once('/')?;
    let addr: std::net::IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u8>().ok().filter(|p| *p <= max)?;
    let ports = match ports {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|p| p.trim().parse::<u16>().ok().filter(|p| *p > 0))
            .collect::<Option<Vec<_>>>()?,
    };
    Some(EgressRule {
        cidr: cidr.to_owned(),
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn egress_entries() {
        let rule = parse("10.0.0.0/8:443,8443").unwrap();
        assert_eq!(
            (rule.cidr.as_str(), rule.ports),
            ("10.0.0.0/8", vec![443, 8443])
        );
        assert_eq!(parse("0.0.0.0/0").unwrap().ports, Vec::<u16>::new());
        assert_eq!(parse("[::/0]:443").unwrap().cidr, "::/0");
        assert_eq!(parse("fd00::/8").unwrap().cidr, "fd00::/8");
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "host:443",
            "10.0.0.0/8:0",
            "10.0.0.0/8:x",
            "[::/0",
        ] {
            assert!(parse(bad).is_none(), "{bad}");
        }
    }
}
