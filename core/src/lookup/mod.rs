//! Iterative lookups (BEP 5): the traversal that finds the nodes closest to a key.

pub(crate) mod traversal;
