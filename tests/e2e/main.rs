//! End-to-end tests across the pieces, one test binary.

mod web_page;
