//! placeholder, replaced by the proxy implementation
