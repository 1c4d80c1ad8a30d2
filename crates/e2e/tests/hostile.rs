//! 10,000 hostile REST bodies against the real host running vote-rest: byte flips and truncations
//! of valid bodies, 5,000-deep nesting, padding past the 16 KiB limit, duplicate keys, wrong
//! types, invalid UTF-8, invisible format characters, huge numbers. None gets a 5xx, and every
//! vote answered 202 is counted exactly once in Redis and logged once in MongoDB.

use std::time::Duration;

use e2e::{component, TestStack};
use futures::stream::{self, StreamExt};

/// Bodies sent, and how many at once.
const BODIES: usize = 10_000;
const IN_FLIGHT: usize = 64;

/// A small deterministic generator (xorshift64*), so a failure replays with the same bodies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const VALID: [&str; 4] = [
    r#"{"name":"Alux Nahual","album":"Conquista","year":"1986","rank":"1"}"#,
    r#"{"name":"Bohemia Suburbana","album":"Eructo del alma","year":1996,"rank":2}"#,
    r#"{"name":"Malacates Trébol Shop","album":"Niño","year":"2008","rank":3}"#,
    r#"{"name":"Viernes Verde","album":"Viernes Verde","year":2003,"rank":"4"}"#,
];

/// One hostile body; the kind cycles so every kind is well represented.
fn hostile(i: usize, rng: &mut Rng) -> Vec<u8> {
    let valid = VALID[rng.below(VALID.len())].as_bytes().to_vec();
    match i % 12 {
        // Byte flips: 1 to 4 bytes of a valid body replaced by random bytes.
        0..=2 => {
            let mut body = valid;
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(body.len());
                body[at] = rng.next() as u8;
            }
            body
        }
        // Truncations anywhere.
        3 | 4 => valid[..rng.below(valid.len())].to_vec(),
        // Deep nesting, bare and inside a field.
        5 => match rng.below(3) {
            0 => format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            1 => format!(r#"{{"name":{}"x"{}}}"#, "[".repeat(5000), "]".repeat(5000)).into_bytes(),
            _ => format!("{}1{}", r#"{"a":"#.repeat(5000), "}".repeat(5000)).into_bytes(),
        },
        // Padding past the 16 KiB limit (white space JSON would allow, or a long name).
        6 => match rng.below(2) {
            0 => [valid, vec![b' '; 16 * 1024 + rng.below(4096)]].concat(),
            _ => format!(r#"{{"name":"{}","album":"a","year":2000,"rank":1}}"#, "x".repeat(17 * 1024)).into_bytes(),
        },
        // Duplicate keys, with the same or another value.
        7 => {
            let field = ["name", "album", "year", "rank"][rng.below(4)];
            let text = String::from_utf8(valid).unwrap();
            text.replacen('{', &format!(r#"{{"{field}":"2000","#), 1).into_bytes()
        }
        // Wrong types.
        8 => {
            let field = ["name", "album", "year", "rank"][rng.below(4)];
            let value = ["null", "true", "[]", "{}", "1.5", "-7", r#""""#, "[\"a\"]"][rng.below(8)];
            let mut vote: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&valid).unwrap();
            vote.insert(field.into(), serde_json::from_str(value).unwrap());
            serde_json::to_vec(&vote).unwrap()
        }
        // Invalid UTF-8 inside a string, or a lone surrogate escape.
        9 => match rng.below(2) {
            0 => [&br#"{"name":"Alux "#[..], &[0xff, 0xfe, 0xc3], &br#"","album":"a","year":2000,"rank":1}"#[..]].concat(),
            _ => br#"{"name":"\ud800","album":"a","year":2000,"rank":1}"#.to_vec(),
        },
        // Invisible format characters (bidirectional overrides, zero-width) in a name.
        10 => {
            let c = ['\u{202E}', '\u{200B}', '\u{2066}', '\u{FEFF}'][rng.below(4)];
            format!(r#"{{"name":"Alux{c}Nahual","album":"Conquista","year":"1986","rank":"1"}}"#).into_bytes()
        }
        // Huge numbers.
        _ => {
            let number = ["1e999", "123456789012345678901234567890", "-1e400", "18446744073709551616", "9".repeat(400).as_str()][rng.below(5)].to_owned();
            format!(r#"{{"name":"Alux Nahual","album":"Conquista","year":{number},"rank":1}}"#).into_bytes()
        }
    }
}

#[tokio::test]
async fn hostile_bodies_get_no_5xx_and_every_202_counts_once() {
    let begun = std::time::Instant::now();
    let stack = TestStack::start().await;
    stack.start_host(&component("vote_rest"), &[]).await;
    stack.start_consumer("consumer", &[]).await;
    eprintln!("stack up after {:?}", begun.elapsed());
    let http = reqwest::Client::new();
    let url = format!("{}/votes", stack.config.host_url());

    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let bodies: Vec<Vec<u8>> = (0..BODIES).map(|i| hostile(i, &mut rng)).collect();
    let replies: Vec<(u16, Vec<u8>, String)> = stream::iter(bodies)
        .map(|body| {
            let (http, url) = (&http, &url);
            async move {
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await
                    .expect("the host answers every request");
                let status = response.status().as_u16();
                (status, body, response.text().await.unwrap_or_default())
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .collect()
        .await;

    let mut accepted = std::collections::HashSet::new();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for (status, body, reply) in &replies {
        *by_status.entry(*status).or_default() += 1;
        assert!(*status < 500, "{status} for {:?}: {reply}", String::from_utf8_lossy(body));
        let reply: serde_json::Value = serde_json::from_str(reply).unwrap_or_else(|_| panic!("{status}: not JSON: {reply}"));
        match status {
            202 => assert!(accepted.insert(reply["vote_id"].as_str().expect("a vote id").to_owned()), "{reply}"),
            _ => assert!(reply["field"].is_string() && reply["error"].is_string(), "{status} without a field: {reply}"),
        }
    }
    eprintln!("statuses after {:?}: {by_status:?}", begun.elapsed());
    assert!(by_status.get(&400).is_some_and(|n| *n > BODIES / 2), "{by_status:?}");
    assert!(by_status.contains_key(&413), "padding past the limit gets 413: {by_status:?}");
    assert!(!accepted.is_empty(), "some flipped bodies stay valid votes: {by_status:?}");

    let expected = accepted.len() as u64;
    stack.wait_for_counts(expected, Duration::from_secs(60)).await;
    assert_eq!(stack.total().await, expected);
    assert_eq!(stack.logged().await, expected);
    let ids: Vec<&String> = accepted.iter().collect();
    let logged = stack.logs().await.count_documents(mongodb::bson::doc! { "_id": { "$in": ids } }).await.unwrap();
    assert_eq!(logged, expected, "every accepted vote id is the one logged");
}
