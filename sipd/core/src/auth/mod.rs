//! Authentication of SIP requests. Staff (management API) credentials are a different
//! concern and never live here: a leaked SIP password must not open the console.

pub mod digest;
