//! PROXY protocol headers (v1 text, v2 binary) at the start of a connection from a load balancer,
//! as the server reads them incrementally.
#![no_main]

use libfuzzer_sys::fuzz_target;
use townhall_shield::{PROXY_V2_MAX_LEN, ProxyParse, parse_proxy_header};

fuzz_target!(|data: &[u8]| {
    match parse_proxy_header(data) {
        Ok(ProxyParse::Complete(header)) => {
            let len = header.header_len;
            assert!(len <= data.len());
            // Bytes after the header are not looked at.
            assert_eq!(parse_proxy_header(&data[..len]), Ok(ProxyParse::Complete(header)));
            // Reading a good header piece by piece never fails before it completes.
            let prefixes: Vec<usize> =
                if len <= 128 { (0..len).collect() } else { vec![0, 1, 15, 16, len / 2, len - 1] };
            for prefix in prefixes {
                let partial = parse_proxy_header(&data[..prefix]);
                assert!(matches!(partial, Ok(ProxyParse::Incomplete { .. })), "{partial:?}");
            }
        }
        Ok(ProxyParse::Incomplete { needed }) => {
            assert!(needed >= 1);
            assert!(data.len() + needed <= PROXY_V2_MAX_LEN, "waits within the bound");
        }
        Err(_) => {}
    }
});
