//! ikol-train: training of the ikol backbone end to end through the IKOL layer (GN-Diff).
//!
//! * [`data`]: the [`data::Dataset`] trait, synthetic samples rendered on the fly with exact
//!   targets, disk shards;
//! * [`pw3d`]: 3DPW sequence files as training data;
//! * [`coco`]: 3DPW as upstream's COCO-style annotation JSON (I2L-MeshNet parse);
//! * [`augment`]: upstream's scale, rotation, flip, colour and occlusion augmentation;
//! * [`loss`]: upstream IKOL's loss terms plus L_opt on the unrolled solver;
//! * [`optim`]: AdamW with checkpointable state;
//! * [`dist`]: data-parallel training (worker threads on the CPU, NCCL across GPUs);
//! * [`train`]: the loop (schedule, clipping, NaN guard, checkpoints, exact resume, evaluation);
//! * [`plot`]: PNG curves of run directories.

pub mod augment;
pub mod coco;
pub mod compare;
pub mod config;
pub mod data;
pub mod dist;
pub mod loss;
pub mod optim;
pub mod plot;
pub mod pw3d;
pub mod spin;
pub mod train;

pub use config::TrainConfig;
pub use data::{Dataset, Sample, SynthDataset, SynthOptions};
pub use train::{EvalReport, StepReport, Trainer};
