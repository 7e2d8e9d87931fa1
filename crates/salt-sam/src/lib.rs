//! SAM in burn (work in progress).
#![warn(missing_docs)]
