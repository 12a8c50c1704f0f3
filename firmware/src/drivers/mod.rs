//! Board drivers, written against embedded-hal 1.0 traits only.
pub mod ina226;
pub mod spi_nor;
