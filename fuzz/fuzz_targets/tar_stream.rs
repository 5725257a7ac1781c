//! The streaming tar reader, driven as the import drives it: every entry's header, then its
//! data either read whole (small entries) or streamed.
//!
//! Properties: it never panics or allocates what the input cannot back; the data it lends
//! out never exceeds the input; its offsets never pass the input's end; a tar it accepts
//! was read to the end (trailing bytes are checked, not ignored).
#![no_main]

use airdock::imgpkg::stream::TarReader;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncReadExt;

fuzz_target!(|data: &[u8]| {
    airdock_fuzz::block_on(async {
        let len = data.len() as u64;
        let mut r = TarReader::new(data);
        let mut yielded = 0u64;
        let mut entries = 0u64;
        let ok = loop {
            let entry = match r.next_entry().await {
                Ok(Some(e)) => e,
                Ok(None) => break true,
                Err(e) => {
                    assert!(e.offset <= len, "error offset {} past {len}", e.offset);
                    break false;
                }
            };
            entries += 1;
            assert!(entry.offset < len);
            assert!(r.offset() <= len);
            // The import reads small entries whole and streams the rest; do both.
            if entry.size <= 4096 && entries % 2 == 0 {
                match r.read_entry_to_vec().await {
                    Ok(v) => {
                        assert_eq!(v.len() as u64, entry.size);
                        yielded += v.len() as u64;
                    }
                    Err(_) => break false,
                }
            } else {
                let mut sink = Vec::new();
                let read = r.data().take(64 << 10).read_to_end(&mut sink).await;
                yielded += sink.len() as u64;
                if read.is_err() {
                    assert!(r.take_data_error().is_some(), "data error not recorded");
                    break false;
                }
            }
            assert!(yielded <= len, "yielded {yielded} bytes from {len}");
            assert!(r.offset() <= len);
        };
        assert!(yielded <= len);
        assert!(r.offset() <= len);
        if ok {
            assert_eq!(r.offset(), len, "accepted without reading to the end");
        }
    });
});
