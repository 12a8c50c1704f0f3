//! preba-sim (work in progress)
