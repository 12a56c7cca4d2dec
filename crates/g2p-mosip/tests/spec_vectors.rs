//! The known-answer vectors of the protocol notes (docs/mosip-keymanager-protocol.md, section
//! 10), read from `tests/vectors/spec-section-10.json`: the layout bytes, key ids, and the data
//! part of each cipher mode, sealed and opened.

#![allow(clippy::unwrap_used)]

use g2p_mosip::cipher::{self, CipherParams, Mode};
use g2p_mosip::key_id;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vectors {
    layout: Layout,
    key_ids: Vec<KeyIdVector>,
    datapart: Vec<DatapartVector>,
}

#[derive(Deserialize)]
struct Layout {
    splitter_hex: String,
    version_header_hex: String,
}

#[derive(Deserialize)]
struct KeyIdVector {
    application_id: String,
    reference_id: String,
    date: String,
    unique_identifier: String,
    key_id: String,
}

#[derive(Deserialize)]
struct DatapartVector {
    vector: u32,
    mode: String,
    session_key_hex: String,
    plaintext: String,
    salt_hex: Option<String>,
    aad_hex: Option<String>,
    random_hex: String,
    datapart_hex: String,
}

fn vectors() -> Vectors {
    serde_json::from_str(include_str!("vectors/spec-section-10.json")).unwrap()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn vector_1_splitter_and_header_bytes() {
    let v = vectors().layout;
    assert_eq!(cipher::SPLITTER.as_slice(), h(&v.splitter_hex));
    assert_eq!(cipher::VERSION_HEADER.as_slice(), h(&v.version_header_hex));
}

#[test]
fn vector_2_key_ids() {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    for v in vectors().key_ids {
        let date = time::Date::parse(&v.date, format).unwrap();
        let unique = key_id::unique_identifier(&v.application_id, &v.reference_id, date);
        assert_eq!(unique, v.unique_identifier, "{}", v.application_id);
        assert_eq!(
            key_id::key_id(&v.application_id, &v.reference_id, date),
            v.key_id
        );
        assert_eq!(
            key_id::key_id_from_unique_identifier(&unique).as_deref(),
            Some(v.key_id.as_str())
        );
    }
}

#[test]
fn vectors_3_to_5_data_parts_seal_and_open() {
    let all = vectors().datapart;
    assert_eq!(all.len(), 3);
    for v in all {
        let params = CipherParams::new(v.salt_hex.as_deref().map(h), v.aad_hex.as_deref().map(h));
        let mode = match params.mode() {
            Mode::A => "A",
            Mode::B => "B",
            Mode::C => "C",
        };
        assert_eq!(mode, v.mode, "vector {}", v.vector);
        let random: [u8; 32] = h(&v.random_hex).try_into().unwrap();
        let key = h(&v.session_key_hex);
        let sealed = cipher::seal_data(&key, &params, v.plaintext.as_bytes(), &random).unwrap();
        assert_eq!(hex::encode(&sealed), v.datapart_hex, "vector {}", v.vector);
        let opened = cipher::open_data(&key, &params, v.mode == "C", &sealed).unwrap();
        assert_eq!(opened, v.plaintext.as_bytes(), "vector {}", v.vector);
    }
}
