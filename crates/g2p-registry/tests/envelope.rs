//! OpenG2P registry encryption of JSON Lines and CSV files through the embedded key manager:
//! what is sealed (exact bytes), what is left alone, rejects, a rotation and a rewrap, and the
//! inventory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use g2p_encryption::{EncryptionProvider, ErrorKind, b64};
use g2p_kms::{Kek, Kms, LocalProvider, LocalSettings, StoreOptions};
use g2p_registry::envelope::{EnvelopeSettings, Inspect, Open, Rewrap, Seal};
use g2p_registry::format::{self, Format};
use g2p_registry::pipeline::{self, Options, Silent, Sinks};
use g2p_registry::{PipelineError, Summary, Transform};
use serde_json::{Value, json};

fn kms(dir: &std::path::Path) -> Arc<Kms> {
    Arc::new(Kms::open(dir, Kek::load(dir, None).unwrap(), StoreOptions::default()).unwrap())
}

fn provider(kms: &Arc<Kms>) -> Arc<dyn EncryptionProvider> {
    Arc::new(LocalProvider::new(kms.clone(), LocalSettings::default()))
}

struct Run {
    result: Result<Summary, PipelineError>,
    out: String,
    rejects: String,
}

async fn run<T: Transform + 'static>(
    transform: &Arc<T>,
    format: Format,
    input: &str,
    with_rejects: bool,
) -> Run {
    let transform: Arc<dyn Transform> = transform.clone();
    let reader = format::read(format, Box::new(std::io::Cursor::new(input.to_string()))).unwrap();
    let mut columns: Vec<String> = reader.header().map(<[String]>::to_vec).unwrap_or_default();
    let input_columns = columns.clone();
    for added in transform.added_columns() {
        if !columns.contains(&added) {
            columns.push(added);
        }
    }
    let (mut out, mut rejects) = (Vec::new(), Vec::new());
    let result = {
        let mut output = format::writer(format, columns, &mut out);
        let mut reject_writer = format::writer(format, input_columns, &mut rejects);
        let sinks = Sinks {
            output: Some(output.as_mut()),
            rejects: with_rejects.then_some(reject_writer.as_mut()),
        };
        let options = Options {
            concurrency: 8,
            ..Options::default()
        };
        pipeline::run(reader, sinks, &transform, options, &Silent).await
    };
    Run {
        result,
        out: String::from_utf8(out).unwrap(),
        rejects: String::from_utf8(rejects).unwrap(),
    }
}

fn records(jsonl: &str) -> Vec<serde_json::Map<String, Value>> {
    jsonl
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap()
                .as_object()
                .unwrap()
                .clone()
        })
        .collect()
}

fn jsonl(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

#[tokio::test]
async fn registrants_are_sealed_into_one_ciphertext_of_their_fields_in_list_order() {
    let dir = tempfile::tempdir().unwrap();
    let kms = kms(dir.path());
    let provider = provider(&kms);
    let earlier = provider.encrypt(br#"{"name": "Earlier"}"#).await.unwrap();
    let input = jsonl(&[
        json!({"id": 1, "is_registrant": true, "address": "12 Kano Rd", "name": "José Ñúñez 😀",
               "given_name": "", "family_name": null, "addl_name": false, "phone": "0803"}),
        json!({"id": 2, "is_registrant": false, "name": "Programme office"}),
        json!({"id": 3, "is_registrant": true, "is_encrypted": true, "name": "encrypted",
               "encrypted_val": b64::encode_b64(&earlier)}),
        json!({"id": 4, "is_registrant": true, "phone": "0804"}),
    ]);
    let seal = Arc::new(Seal::new(provider.clone(), EnvelopeSettings::default()));
    let ran = run(&seal, Format::JsonLines, &input, false).await;
    let summary = ran.result.unwrap();
    assert_eq!(
        (summary.records, summary.changed, summary.skipped),
        (4, 1, 3)
    );
    assert_eq!(summary.values, 2);
    let sealed = records(&ran.out);
    let first = &sealed[0];
    assert_eq!(first["name"], "encrypted");
    assert_eq!(first["address"], "encrypted");
    assert_eq!(
        (&first["given_name"], &first["family_name"]),
        (&json!(""), &Value::Null)
    );
    assert_eq!(
        (&first["phone"], &first["is_encrypted"]),
        (&json!("0803"), &json!(true))
    );
    // Standard base64 of the raw ciphertext, which decrypts to json.dumps of the gathered
    // fields in the order of the list (name before address), non-ASCII escaped.
    let text = first["encrypted_val"].as_str().unwrap();
    assert!(!text.contains('-') && !text.contains('_'));
    let plaintext = provider
        .decrypt(&b64::decode_lenient(text).unwrap())
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(plaintext).unwrap(),
        r#"{"name": "Jos\u00e9 \u00d1\u00fa\u00f1ez \ud83d\ude00", "address": "12 Kano Rd"}"#
    );
    // The others are written as they were.
    let expected = records(&input);
    assert_eq!(&sealed[1..], &expected[1..]);

    // Opening restores the records (encrypted_val cleared, is_encrypted false).
    let ran = run(
        &Arc::new(Open::new(provider.clone())),
        Format::JsonLines,
        &ran.out,
        false,
    )
    .await;
    assert_eq!(ran.result.unwrap().changed, 2);
    let opened = records(&ran.out);
    assert_eq!(opened[2]["name"], "Earlier");
    let mut want = expected[0].clone();
    want.insert("encrypted_val".into(), Value::Null);
    want.insert("is_encrypted".into(), json!(false));
    assert_eq!(opened[0], want);
}

#[tokio::test]
async fn opening_accepts_any_key_order_spacing_and_base64url() {
    let dir = tempfile::tempdir().unwrap();
    let kms = kms(dir.path());
    let provider = provider(&kms);
    let ciphertext = provider
        .encrypt("{ \"address\":\"x\",\n\"name\" : \"Ada\" }".as_bytes())
        .await
        .unwrap();
    let input = jsonl(&[json!({"id": 9, "is_encrypted": true, "name": "encrypted",
        "address": "encrypted", "encrypted_val": b64::encode_b64u(&ciphertext)})]);
    let ran = run(
        &Arc::new(Open::new(provider)),
        Format::JsonLines,
        &input,
        false,
    )
    .await;
    ran.result.unwrap();
    let opened = &records(&ran.out)[0];
    assert_eq!(
        (&opened["name"], &opened["address"]),
        (&json!("Ada"), &json!("x"))
    );
}

#[tokio::test]
async fn csv_round_trips_with_text_flags_and_added_columns() {
    let dir = tempfile::tempdir().unwrap();
    let kms = kms(dir.path());
    let provider = provider(&kms);
    let input = "id,name,given_name,address,is_registrant\n\
                 1,\"Okafor, Chidi\",Chidi,\"Line 1\nLine 2\",True\n\
                 2,Group,,,False\n\
                 3,Zoë,,,1\n";
    let seal = Arc::new(Seal::new(provider.clone(), EnvelopeSettings::default()));
    let ran = run(&seal, Format::Csv, input, false).await;
    assert_eq!(ran.result.unwrap().changed, 2);
    let mut rows = csv::Reader::from_reader(ran.out.as_bytes());
    let header: Vec<String> = rows.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(
        header,
        [
            "id",
            "name",
            "given_name",
            "address",
            "is_registrant",
            "encrypted_val",
            "is_encrypted"
        ]
    );
    let rows: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
    assert_eq!(&rows[0][1], "encrypted");
    assert_eq!(&rows[0][6], "true");
    assert_eq!((&rows[1][1], &rows[1][5], &rows[1][6]), ("Group", "", ""));
    let ciphertext = b64::decode_lenient(&rows[2][5]).unwrap();
    let plaintext = provider.decrypt(&ciphertext).await.unwrap();
    assert_eq!(plaintext, br#"{"name": "Zo\u00eb"}"#);

    let ran = run(&Arc::new(Open::new(provider)), Format::Csv, &ran.out, false).await;
    ran.result.unwrap();
    let mut rows = csv::Reader::from_reader(ran.out.as_bytes());
    let first = rows.records().next().unwrap().unwrap();
    assert_eq!(&first[1], "Okafor, Chidi");
    assert_eq!(&first[3], "Line 1\nLine 2");
    assert_eq!((&first[5], &first[6]), ("", "false"));
}

#[tokio::test]
async fn after_a_rotation_rewrap_touches_only_old_records_and_everything_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let kms = kms(dir.path());
    let provider = provider(&kms);
    let seal = Arc::new(Seal::new(provider.clone(), EnvelopeSettings::default()));
    let before: Vec<Value> = (0..20)
        .map(|i| json!({"id": i, "is_registrant": true, "name": format!("Person {i}")}))
        .collect();
    let first = run(&seal, Format::JsonLines, &jsonl(&before[..10]), false).await;
    first.result.unwrap();
    kms.store().rotate("REGISTRATION", "ENCRYPT").unwrap();
    let second = run(&seal, Format::JsonLines, &jsonl(&before[10..]), false).await;
    second.result.unwrap();
    let mixed = format!("{}{}", first.out, second.out);

    let inspect = Arc::new(Inspect::new(Some(provider.clone())));
    run(&inspect, Format::JsonLines, &mixed, false)
        .await
        .result
        .unwrap();
    let inventory = inspect.inventory();
    assert_eq!((inventory.plain, inventory.encrypted), (0, 20));
    let counts: Vec<usize> = inventory.by_key.values().map(|c| c.records).collect();
    assert_eq!(counts.len(), 2);
    assert_eq!(counts.iter().sum::<usize>(), 20);
    assert!(inventory.failures.is_empty());

    let rewrap = Arc::new(Rewrap::new(provider.clone()).await.unwrap());
    let ran = run(&rewrap, Format::JsonLines, &mixed, false).await;
    let summary = ran.result.unwrap();
    assert_eq!((summary.changed, summary.skipped), (10, 10));
    let rewrapped = records(&ran.out);
    let old = records(&mixed);
    for i in 0..20 {
        let same = rewrapped[i]["encrypted_val"] == old[i]["encrypted_val"];
        assert_eq!(same, i >= 10, "record {i}");
    }
    // Running it again changes nothing.
    let again = run(&rewrap, Format::JsonLines, &ran.out, false).await;
    assert_eq!(again.result.unwrap().changed, 0);
    assert_eq!(again.out, ran.out);

    let inspect = Arc::new(Inspect::new(None));
    run(&inspect, Format::JsonLines, &ran.out, false)
        .await
        .result
        .unwrap();
    assert_eq!(inspect.inventory().by_key.len(), 1);

    let opened = run(
        &Arc::new(Open::new(provider)),
        Format::JsonLines,
        &ran.out,
        false,
    )
    .await;
    opened.result.unwrap();
    for (i, record) in records(&opened.out).iter().enumerate() {
        assert_eq!(record["name"], format!("Person {i}"));
    }
}

#[tokio::test]
async fn bad_lines_and_bad_ciphertexts_stop_the_run_or_go_to_the_rejects() {
    let dir = tempfile::tempdir().unwrap();
    let kms = kms(dir.path());
    let provider = provider(&kms);
    let good = provider.encrypt(br#"{"name": "Ada"}"#).await.unwrap();
    let mut tampered = good.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let input = format!(
        "{}\n{{broken\n{}\n{}\n{}\n",
        json!({"id": 1, "is_encrypted": true, "encrypted_val": b64::encode_b64(&good)}),
        json!({"id": 3, "is_encrypted": true, "encrypted_val": "not base64!"}),
        json!({"id": 4, "is_encrypted": true, "encrypted_val": b64::encode_b64(&tampered)}),
        json!({"id": 5, "is_encrypted": "True", "encrypted_val": ""}),
    );
    let open = Arc::new(Open::new(provider.clone()));
    let ran = run(&open, Format::JsonLines, &input, false).await;
    let e = ran.result.unwrap_err();
    assert_eq!(e.to_string(), "line 2: not JSON: key must be a string");

    let ran = run(&open, Format::JsonLines, &input, true).await;
    let summary = ran.result.unwrap();
    assert_eq!(
        (summary.records, summary.changed, summary.failed),
        (5, 1, 4)
    );
    assert_eq!(records(&ran.out).len(), 1);
    let rejects: Vec<&str> = ran.rejects.lines().collect();
    assert_eq!(rejects[0], "{broken");
    assert_eq!(rejects.len(), 4);
    assert!(rejects[1].contains("not base64!"));

    // Without rejects, each cause is named by line and field, never by content.
    for (line, cause, kind) in [
        (
            3,
            "field encrypted_val: not base64",
            ErrorKind::InvalidInput,
        ),
        (
            4,
            "field encrypted_val: decryption failed",
            ErrorKind::Refused,
        ),
        (
            5,
            "field encrypted_val: is_encrypted is true but encrypted_val is empty",
            ErrorKind::InvalidInput,
        ),
    ] {
        let one = input.lines().nth(line - 1).unwrap();
        let ran = run(&open, Format::JsonLines, &format!("\n{one}"), false).await;
        let e = ran.result.unwrap_err();
        assert_eq!(e.kind(), kind);
        assert!(
            e.to_string().starts_with(&format!("line 2, {cause}")),
            "{e}"
        );
    }
}

#[tokio::test]
async fn a_field_list_that_matches_nothing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kms = kms(dir.path());
    let provider = provider(&kms);
    let input = jsonl(&[json!({"id": 1, "is_registrant": true, "name": "A"})]);
    let named = EnvelopeSettings {
        fields: vec!["name".into(), "nme".into()],
        named: true,
        ..EnvelopeSettings::default()
    };
    let e = run(
        &Arc::new(Seal::new(provider.clone(), named)),
        Format::JsonLines,
        &input,
        false,
    )
    .await
    .result
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string().starts_with("no record has the field \"nme\""),
        "{e}"
    );
    // The default list needs only one of its fields to occur...
    let ran = run(
        &Arc::new(Seal::new(provider.clone(), EnvelopeSettings::default())),
        Format::JsonLines,
        &input,
        false,
    )
    .await;
    assert_eq!(ran.result.unwrap().changed, 1);
    // ...and is_registrant, unless every record is to be encrypted.
    let input = jsonl(&[json!({"id": 1, "name": "A"})]);
    let e = run(
        &Arc::new(Seal::new(provider.clone(), EnvelopeSettings::default())),
        Format::JsonLines,
        &input,
        false,
    )
    .await
    .result
    .unwrap_err();
    assert!(e.to_string().contains("--all-records"), "{e}");
    let all = EnvelopeSettings {
        registrants_only: false,
        ..EnvelopeSettings::default()
    };
    let ran = run(
        &Arc::new(Seal::new(provider, all)),
        Format::JsonLines,
        &input,
        false,
    )
    .await;
    assert_eq!(ran.result.unwrap().changed, 1);
}
