//! Any bytes: the loader must return Ok or Err, never panic, and rendering
//! the error must not panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let path = std::path::Path::new("/nonexistent/fuzz.toml");
        if let Err(e) = vmrun::config::load_str("fuzz", path, text) {
            let _ = vmrun::config::render(&e);
        }
    }
});
