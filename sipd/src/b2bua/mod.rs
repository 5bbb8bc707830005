//! The call core.
