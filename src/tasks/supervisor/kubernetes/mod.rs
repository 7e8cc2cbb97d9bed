//! The supervisor on Kubernetes (`platform: kubernetes`). DigitalOcean Kubernetes' side, pure:
//! which cluster (`cluster`), its node pools and their size (`pools`), and when the API's
//! credentials are fetched again (`credentials`). Each returns typed steps; the task performs
//! them, and the dry run prints them.

pub mod cluster;
pub mod credentials;
pub mod doks;
pub mod pools;
