//! Per-container log store (being written).
