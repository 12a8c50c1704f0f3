//! preba-batcher (being written).
