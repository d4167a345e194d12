//! Fuzzes the agent's borrowed decoder (`session::view`) against prost: the
//! input is a `DetectionResult` (and a lone `ProcessRecord`) on the wire.
//! The views must never panic, must accept exactly what prost accepts, give
//! the values prost gives (compared through prost's re-encoding, so NaN
//! bits count), read every record and argument they counted, and refuse by
//! the schema's rules exactly what `validate()` refuses, with the same
//! error.
#![no_main]

use daemoneye_lib::codec::Codec;
use daemoneye_lib::proto::{DetectionResult, ProtoProcessRecord};
use daemoneye_lib::session::{DetectionResultView, ProcessRecordView, ViewError};
use libfuzzer_sys::fuzz_target;

const CODEC: Codec = Codec::new(1 << 30);

fuzz_target!(|input: &[u8]| {
    let owned = CODEC.decode::<DetectionResult>(input);
    let view = DetectionResultView::decode(input);
    match (&owned, &view) {
        (Ok(owned), Ok(view)) => {
            let back = view.to_owned();
            assert_eq!(CODEC.encode(&back).unwrap(), CODEC.encode(owned).unwrap());
            assert_eq!(view.process_count(), owned.processes.len());
            let mut seen = 0;
            for (record, process) in owned.processes.iter().zip(view.processes()) {
                let args = process.command_line();
                assert_eq!(args.len(), record.command_line.len());
                assert!(args.eq(record.command_line.iter().map(String::as_str)));
                assert_eq!(process.name(), record.name);
                seen += 1;
            }
            assert_eq!(seen, owned.processes.len());
        }
        (Err(_), Err(_)) => {}
        (owned, view) => panic!(
            "prost accepts: {}, the view accepts: {}",
            owned.is_ok(),
            view.is_ok()
        ),
    }

    // With the rules: the same verdict and the same error (compared as
    // text: a NaN CPU usage is unequal to itself).
    let checked = owned.map(|result| result.validate());
    match (checked, DetectionResultView::parse(input)) {
        (Ok(Ok(())), Ok(_)) | (Err(_), Err(ViewError::Wire(_))) => {}
        (Ok(Err(owned)), Err(ViewError::Invalid(view))) => {
            assert_eq!(format!("{owned:?}"), format!("{view:?}"));
        }
        (owned, view) => panic!("prost and validate: {owned:?}, the view: {view:?}"),
    }

    // The same bytes as one record.
    let owned = CODEC.decode::<ProtoProcessRecord>(input);
    match (owned, ProcessRecordView::decode(input)) {
        (Ok(owned), Ok(decoded)) => {
            let view = decoded.view();
            assert_eq!(
                CODEC.encode(&view.to_owned()).unwrap(),
                CODEC.encode(&owned).unwrap()
            );
            assert_eq!(
                format!("{:?}", view.validate()),
                format!("{:?}", owned.validate())
            );
        }
        (Err(_), Err(_)) => {}
        (owned, view) => panic!(
            "prost accepts the record: {}, the view: {}",
            owned.is_ok(),
            view.is_ok()
        ),
    }
});
