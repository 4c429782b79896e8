//! Property tests live in `tests/`, one file per concept.
