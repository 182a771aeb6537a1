//! Container process runtime (being written).
