//! TLS for the HotPlex edge proxy (being built).
