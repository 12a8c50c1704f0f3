//! Audio pipeline (owned by the audio work; see issue 3).
