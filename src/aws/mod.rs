//! AWS behind narrow interfaces, implemented on the SDK clients.

pub mod autoscaling;
pub mod clients;
pub mod ec2;
pub mod elb_classic;
pub mod elbv2;
pub mod error;
pub mod iam;
pub mod kms;
pub mod pacing;
pub mod permissions;
pub mod s3;
pub mod sessions;
pub mod snapshot_copy;
pub mod snapshot_lock;
pub mod snapshot_share;
pub mod sqs;
pub mod ssm;

pub use clients::{CaptureClients, RegionClients};
pub use error::{AwsError, ErrorClass};
