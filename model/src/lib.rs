//! ghost-model: the local model of ghostos — fetching it from a Hugging Face hub, running it
//! with Candle, embeddings, and decoding constrained to a JSON schema. Each concern is its own
//! module; the `ghost model …` commands (services/ghost) and the model server are built on them.

pub mod constrain;
pub mod embed;
pub mod hub;
pub mod fixture;
pub mod generate;
pub mod router;
pub mod serve;
