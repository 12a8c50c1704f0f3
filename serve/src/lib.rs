//! preba-serve (being written).
