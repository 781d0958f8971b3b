//! Fuzz the SIP parser and the stream framer: no input may panic, and whatever parses must
//! print back to bytes that parse to the same typed fields.
#![no_main]

use bytes::Bytes;
use dce_sip::framing::{frame, Frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Frame::Message(n) | Frame::Ping(n) | Frame::Skip(n) = frame(data, 65_535) {
        assert!(n <= data.len());
    }
    if let Ok(msg) = dce_sip::parse(Bytes::copy_from_slice(data)) {
        let printed = msg.to_buf().print();
        let again = dce_sip::parse(printed).expect("what DCE prints must parse");
        assert_eq!(again.call_id(), msg.call_id());
        assert_eq!(again.cseq(), msg.cseq());
        assert_eq!(again.vias().len(), msg.vias().len());
        assert_eq!(again.body(), msg.body());
    }
});
