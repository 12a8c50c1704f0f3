//! Logging from the library: on the soft core the macros expand to defmt
//! (frames go to the log ring through the binary's global logger); on the
//! host (tests) they only evaluate their arguments by reference.

/// `fw_log!(info, "fmt {=u32}", x)`: a defmt log call on the card, nothing on the host.
#[macro_export]
#[doc(hidden)]
macro_rules! fw_log {
    ($level:ident, $fmt:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(target_os = "none")]
        {
            defmt::$level!($fmt $(, $arg)*);
        }
        #[cfg(not(target_os = "none"))]
        {
            $( let _ = &$arg; )*
        }
    }};
}
