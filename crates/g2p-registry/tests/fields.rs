//! Field-level encryption of a JSON Lines export through the embedded key manager: order,
//! untouched fields, progress, and the first failure named by line and field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use g2p_encryption::{EncryptionProvider, ErrorKind};
use g2p_kms::{Kek, Kms, LocalProvider, LocalSettings, StoreOptions};
use g2p_registry::fields::{Direction, FieldCrypt};
use g2p_registry::format::{self, Format};
use g2p_registry::pipeline::{self, Options, Report, Sinks};
use g2p_registry::record::FieldPath;
use g2p_registry::{PipelineError, Summary, Transform};
use serde_json::{Value, json};

fn provider(dir: &std::path::Path) -> Arc<dyn EncryptionProvider> {
    let kms = Kms::open(dir, Kek::load(dir, None).unwrap(), StoreOptions::default()).unwrap();
    Arc::new(LocalProvider::new(Arc::new(kms), LocalSettings::default()))
}

fn fields(names: &[&str]) -> Vec<FieldPath> {
    names.iter().map(|n| FieldPath::parse(n).unwrap()).collect()
}

struct Count(AtomicUsize);

impl Report for Count {
    fn progress(&self, _: &Summary) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

async fn run_bytes(
    transform: &Arc<dyn Transform>,
    input: &[u8],
    concurrency: usize,
) -> (Result<Summary, PipelineError>, String, usize) {
    let reader = format::read(
        Format::JsonLines,
        Box::new(std::io::Cursor::new(input.to_vec())),
    )
    .unwrap();
    let mut out = Vec::new();
    let calls = Count(AtomicUsize::new(0));
    let result = {
        let mut writer = format::writer(Format::JsonLines, Vec::new(), &mut out);
        let sinks = Sinks {
            output: Some(writer.as_mut()),
            rejects: None,
        };
        let options = Options {
            concurrency,
            ..Options::default()
        };
        pipeline::run(reader, sinks, transform, options, &calls).await
    };
    (
        result,
        String::from_utf8(out).unwrap(),
        calls.0.load(Ordering::SeqCst),
    )
}

async fn run_on(
    provider: &Arc<dyn EncryptionProvider>,
    input: &str,
    names: &[&str],
    direction: Direction,
    concurrency: usize,
) -> (Result<Summary, PipelineError>, String, usize) {
    let transform: Arc<dyn Transform> =
        Arc::new(FieldCrypt::new(provider.clone(), fields(names), direction));
    run_bytes(&transform, input.as_bytes(), concurrency).await
}

#[tokio::test]
async fn many_records_round_trip_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path());
    let mut input = String::new();
    for i in 0..300u32 {
        let record = json!({"id": i, "name": format!("Person {i}"), "address": {"street": format!("{i} Road"), "city": "Kano"}});
        input.push_str(&format!("{record}\n"));
        if i.is_multiple_of(50) {
            input.push_str("   \n");
        }
    }
    let (result, sealed, progress) = run_on(
        &provider,
        &input,
        &["name", "address.street"],
        Direction::Encrypt,
        32,
    )
    .await;
    let summary = result.unwrap();
    assert_eq!((summary.records, summary.values), (300, 600));
    assert_eq!(progress, 300);
    for (i, line) in sealed.lines().enumerate() {
        let record: Value = serde_json::from_str(line).unwrap();
        assert_eq!(record["id"], i, "order kept");
        assert_eq!(record["address"]["city"], "Kano");
        assert_ne!(record["name"], format!("Person {i}"));
    }
    let (result, opened, _) = run_on(
        &provider,
        &sealed,
        &["name", "address.street"],
        Direction::Decrypt,
        7,
    )
    .await;
    result.unwrap();
    let expected: Vec<&str> = input.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(opened.lines().collect::<Vec<_>>(), expected);
}

#[tokio::test]
async fn the_first_failure_names_its_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path());
    let input = "{\"name\":\"A\"}\n\n{\"name\":\"B\",\"age\":3}\n{\"name\":\"C\"}\n";
    let (result, _, _) = run_on(&provider, input, &["name", "age"], Direction::Encrypt, 4).await;
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(
        e.to_string(),
        "line 3, field age: a number is not text (bulk encrypt takes strings)"
    );
    let (result, _, _) = run_on(
        &provider,
        "{\"name\":\"A\"}\n[1]\n",
        &["name"],
        Direction::Encrypt,
        4,
    )
    .await;
    assert_eq!(
        result.unwrap_err().to_string(),
        "line 2: an array is not a record (a JSON object)"
    );
    let (result, _, _) = run_on(
        &provider,
        "{\"name\":\"@@@\"}\n",
        &["name"],
        Direction::Decrypt,
        4,
    )
    .await;
    let e = result.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("line 1, field name: not a base64url"),
        "{e}"
    );
    // Input that is not UTF-8 is named too.
    let transform: Arc<dyn Transform> = Arc::new(FieldCrypt::new(
        provider.clone(),
        fields(&["name"]),
        Direction::Encrypt,
    ));
    let (result, _, _) = run_bytes(&transform, b"{\"name\":\"A\"}\n\xff\xfe\n", 4).await;
    let e = result.unwrap_err();
    assert!(e.to_string().starts_with("line 2: not JSON"), "{e}");
}

#[tokio::test]
async fn a_field_that_occurs_in_no_record_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let provider = provider(dir.path());
    let input = "{\"name\":\"A\"}\n{\"name\":null}\n";
    let (result, _, _) = run_on(&provider, input, &["nme", "name"], Direction::Encrypt, 4).await;
    let e = result.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string()
            .starts_with("no record has the field \"nme\": nothing was written"),
        "{e}"
    );
    // A field present only as null still counts as present.
    let (result, _, _) = run_on(
        &provider,
        "{\"name\":null}\n",
        &["name"],
        Direction::Encrypt,
        4,
    )
    .await;
    assert_eq!(result.unwrap().values, 0);
    // Empty input is not a mistake.
    let (result, out, _) = run_on(&provider, "", &["nme"], Direction::Encrypt, 4).await;
    assert_eq!((result.unwrap().records, out.as_str()), (0, ""));
    // Allowed on request.
    let transform: Arc<dyn Transform> = Arc::new(FieldCrypt::new(
        provider.clone(),
        fields(&["nme"]),
        Direction::Encrypt,
    ));
    let reader = format::read(Format::JsonLines, Box::new(std::io::Cursor::new(input))).unwrap();
    let options = Options {
        allow_missing_fields: true,
        ..Options::default()
    };
    let sinks = Sinks {
        output: None,
        rejects: None,
    };
    let summary = pipeline::run(reader, sinks, &transform, options, &pipeline::Silent)
        .await
        .unwrap();
    assert_eq!(
        (summary.records, summary.skipped, summary.values),
        (2, 2, 0)
    );
}
