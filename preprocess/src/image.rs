//! Image pipeline (owned by the image work; see issue 3).
