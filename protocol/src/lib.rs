//! Tessera wire protocol (defined by the protocol issue).
