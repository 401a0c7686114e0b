//! Decoding cost of a compressed request body (`encoding::decode`): a 64 KiB webhook JSON
//! body sent as gzip, deflate (zlib) and br, decoded under the default cap (8 MiB), and a
//! gzip bomb (10 MiB of zeros) stopped at a 1 MiB cap.
//!
//! `cargo bench --bench encoding` (about 40 s, after a release build of the crate).

use std::io::Write;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use hookgate::encoding::{decode, Coding};

/// About 64 KiB of event JSON: objects shaped like a chat message event, repeated.
fn body() -> Vec<u8> {
    let mut items = Vec::new();
    let mut len = 0;
    let mut i = 0;
    while len < 64 * 1024 {
        let item = format!(
            r#"{{"id":"m-{i:08}","type":"message.new","user":{{"id":"u-{}","name":"User {}"}},"text":"message number {i} with some words","created_at":"2026-11-30T11:{:02}:00Z"}}"#,
            i % 97,
            i % 97,
            i % 60
        );
        len += item.len() + 1;
        items.push(item);
        i += 1;
    }
    format!(
        r#"{{"type":"message.new","messages":[{}]}}"#,
        items.join(",")
    )
    .into_bytes()
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => {
            let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Coding::Deflate => {
            let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
            encoder.write_all(data).unwrap();
            encoder.finish().unwrap()
        }
        Coding::Brotli => {
            let mut out = Vec::new();
            let params = brotli::enc::BrotliEncoderParams::default();
            brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
            out
        }
    }
}

fn decoding(c: &mut Criterion) {
    let data = body();
    let mut group = c.benchmark_group("decode_64k");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for coding in [Coding::Gzip, Coding::Deflate, Coding::Brotli] {
        let encoded = encode(coding, &data);
        group.bench_function(coding.as_str(), |b| {
            b.iter(|| decode(coding, black_box(&encoded), 8 << 20).unwrap())
        });
    }
    group.finish();
    let bomb = encode(Coding::Gzip, &vec![0u8; 10 << 20]);
    c.bench_function("gzip_bomb_to_1MiB_cap", |b| {
        b.iter(|| decode(Coding::Gzip, black_box(&bomb), 1 << 20).unwrap_err())
    });
}

criterion_group!(benches, decoding);
criterion_main!(benches);
