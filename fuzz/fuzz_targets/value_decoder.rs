//! Arbitrary bytes into the value decoder and the cell key/value decoders.
//!
//! Whatever decodes must re-encode to bytes that decode to the same thing, and re-encoding is
//! a fixpoint (the encoder is canonical even where the decoder is lenient, e.g. overlong
//! varints).

#![no_main]

use blazedb::codec::value;
use blazedb::crdt::encoding;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = value::from_bytes(data) {
        let bytes = value::to_bytes(&v);
        let back = value::from_bytes(&bytes).expect("own encoding decodes");
        assert_eq!(
            value::to_bytes(&back),
            bytes,
            "value encoding is not a fixpoint"
        );
    }
    if let Ok(k) = encoding::key_from_bytes(data) {
        let bytes = encoding::key_bytes(&k);
        assert_eq!(
            encoding::key_from_bytes(&bytes).expect("own key decodes"),
            k
        );
    }
    if let Ok(v) = encoding::value_from_bytes(data) {
        let bytes = encoding::value_bytes(&v);
        let back = encoding::value_from_bytes(&bytes).expect("own cell value decodes");
        assert_eq!(
            encoding::value_bytes(&back),
            bytes,
            "cell value encoding is not a fixpoint"
        );
    }
});
