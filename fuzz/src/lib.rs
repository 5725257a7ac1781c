//! Helpers shared by the fuzz targets: running airdock's async parsers to completion on
//! in-memory input, and cutting one fuzz input into several fields.

use std::future::Future;

/// Runs `f` on a current-thread runtime built once per process: the readers under test
/// read from byte slices, so they never wait on anything but themselves.
pub fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Splits `data` at the first `sep`: `(before, after)`, or `(data, &[])`.
pub fn split_once(data: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match data.iter().position(|&c| c == sep) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}

/// A little-endian number from the first up-to-8 bytes of `data`, and the rest.
pub fn take_u64(data: &[u8]) -> (u64, &[u8]) {
    let n = data.len().min(8);
    let mut b = [0u8; 8];
    b[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(b), &data[n..])
}
