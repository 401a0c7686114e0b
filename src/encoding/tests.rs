use std::io::Write;

use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use http::{HeaderMap, HeaderValue};

use super::*;

const JSON: &[u8] =
    br#"{"type":"message.new","message":{"id":"m-1","text":"hello hello hello hello hello"}}"#;

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let params = brotli::enc::BrotliEncoderParams {
        quality: 5,
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &data[..], &mut out, &params).unwrap();
    out
}

fn encode(coding: Coding, data: &[u8]) -> Vec<u8> {
    match coding {
        Coding::Gzip => gzip(data),
        Coding::Deflate => zlib(data),
        Coding::Brotli => br(data),
    }
}

const ALL: [Coding; 3] = [Coding::Gzip, Coding::Deflate, Coding::Brotli];

fn headers(lines: &[&str]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in lines {
        map.append(
            http::header::CONTENT_ENCODING,
            HeaderValue::from_str(line).unwrap(),
        );
    }
    map
}

#[test]
fn content_encoding_is_read_as_one_case_insensitive_coding() {
    use CodingError::*;
    type Case<'a> = (&'a [&'a str], Result<Option<Coding>, CodingError>);
    let cases: &[Case] = &[
        (&[], Ok(None)),
        (&["identity"], Ok(None)),
        (&["IDENTITY"], Ok(None)),
        (&["gzip"], Ok(Some(Coding::Gzip))),
        (&["GZip"], Ok(Some(Coding::Gzip))),
        (&["x-gzip"], Ok(Some(Coding::Gzip))),
        (&["deflate"], Ok(Some(Coding::Deflate))),
        (&["br"], Ok(Some(Coding::Brotli))),
        (&["BR"], Ok(Some(Coding::Brotli))),
        // stacked codings, in one line or several, identity included
        (&["gzip, br"], Err(Stacked)),
        (&["gzip,br"], Err(Stacked)),
        (&["gzip", "br"], Err(Stacked)),
        (&["gzip", "gzip"], Err(Stacked)),
        (&["identity, gzip"], Err(Stacked)),
        (&["zstd, gzip"], Err(Stacked)),
        // unknown codings
        (&["zstd"], Err(Unsupported)),
        (&["compress"], Err(Unsupported)),
        (&["x-compress"], Err(Unsupported)),
        (&["gzip2"], Err(Unsupported)),
        // malformed lists: empty members, characters outside a token
        (&[""], Err(Malformed)),
        (&["gzip,"], Err(Malformed)),
        (&[", gzip"], Err(Malformed)),
        (&["gzip,,br"], Err(Malformed)),
        (&["g zip"], Err(Malformed)),
        (&["gzip;q=1"], Err(Malformed)),
        (&["\"gzip\""], Err(Malformed)),
    ];
    for (lines, want) in cases {
        assert_eq!(&read(&headers(lines)), want, "{lines:?}");
    }
}

#[test]
fn every_coding_round_trips() {
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    for coding in ALL {
        for data in [JSON, b"" as &[u8], &big] {
            let decoded = decode(coding, &encode(coding, data), 1 << 20).unwrap();
            assert_eq!(decoded, data, "{coding}");
        }
    }
}

#[test]
fn the_cap_allows_exactly_the_limit_and_refuses_one_byte_more() {
    // Sizes around the growth steps too, where the output buffer is full exactly.
    for size in [1usize, 100, MIN_GROWTH, MIN_GROWTH + 1, 3 * MIN_GROWTH + 7] {
        let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        for coding in ALL {
            let body = encode(coding, &data);
            let limit = size as u64;
            assert_eq!(
                decode(coding, &body, limit).unwrap(),
                data,
                "{coding} {size}"
            );
            assert_eq!(
                decode(coding, &body, limit - 1),
                Err(DecodeError::TooLarge { limit: limit - 1 }),
                "{coding} {size}"
            );
        }
    }
    for coding in ALL {
        assert_eq!(decode(coding, &encode(coding, b""), 0).unwrap(), b"");
        assert_eq!(
            decode(coding, &encode(coding, b"x"), 0),
            Err(DecodeError::TooLarge { limit: 0 })
        );
    }
}

#[test]
fn a_bomb_stops_at_the_cap() {
    let zeros = vec![0u8; 10 << 20];
    let bomb = gzip(&zeros);
    assert!(
        bomb.len() < 20 << 10,
        "10 MiB of zeros gzip to {} B",
        bomb.len()
    );
    assert_eq!(
        decode(Coding::Gzip, &bomb, 1 << 20),
        Err(DecodeError::TooLarge { limit: 1 << 20 })
    );
    let bomb = zlib(&zeros);
    assert_eq!(
        decode(Coding::Deflate, &bomb, 1 << 20),
        Err(DecodeError::TooLarge { limit: 1 << 20 })
    );
    let bomb = br(&zeros[..3 << 20]);
    assert!(bomb.len() < 1024, "3 MiB of zeros br to {} B", bomb.len());
    assert_eq!(
        decode(Coding::Brotli, &bomb, 1 << 20),
        Err(DecodeError::TooLarge { limit: 1 << 20 })
    );
}

fn why(result: Result<Vec<u8>, DecodeError>) -> &'static str {
    match result {
        Err(DecodeError::Corrupt { why, .. }) => why,
        other => panic!("expected corrupt, got {other:?}"),
    }
}

#[test]
fn every_truncation_of_a_stream_is_corrupt() {
    let data: Vec<u8> = JSON.repeat(20);
    for coding in ALL {
        let body = encode(coding, &data);
        for cut in 0..body.len() {
            let result = decode(coding, &body[..cut], 1 << 20);
            assert!(
                matches!(result, Err(DecodeError::Corrupt { .. })),
                "{coding}: {cut} of {} bytes gave {result:?}",
                body.len()
            );
        }
    }
    assert_eq!(why(decode(Coding::Gzip, b"", 1024)), TRUNCATED);
    assert_eq!(why(decode(Coding::Brotli, b"", 1024)), TRUNCATED);
}

#[test]
fn bytes_after_the_stream_are_corrupt() {
    for coding in ALL {
        let mut body = encode(coding, JSON);
        body.push(b'x');
        assert_eq!(why(decode(coding, &body, 1 << 20)), TRAILING, "{coding}");
    }
    // A second gzip member: Go and Node read it, Python's zlib does not.
    let mut two = gzip(JSON);
    two.extend_from_slice(&gzip(b"{\"type\":\"other\"}"));
    assert_eq!(why(decode(Coding::Gzip, &two, 1 << 20)), TRAILING);
}

#[test]
fn invalid_data_and_checksums_are_corrupt() {
    // deflate is the zlib format only: raw deflate is refused.
    assert_eq!(
        why(decode(Coding::Deflate, &raw_deflate(JSON), 1 << 20)),
        INVALID
    );
    // gzip data under deflate, and zlib data under gzip.
    assert_eq!(why(decode(Coding::Deflate, &gzip(JSON), 1 << 20)), INVALID);
    assert_eq!(why(decode(Coding::Gzip, &zlib(JSON), 1 << 20)), INVALID);
    // A damaged CRC-32 (gzip) or Adler-32 (zlib) trailer.
    for coding in [Coding::Gzip, Coding::Deflate] {
        let mut body = encode(coding, JSON);
        let at = body.len() - if coding == Coding::Gzip { 8 } else { 1 };
        body[at] ^= 0x01;
        let error = decode(coding, &body, 1 << 20).unwrap_err();
        assert!(
            matches!(error, DecodeError::Corrupt { why: INVALID, .. }),
            "{coding}: {error:?}"
        );
    }
    // The wrong gzip length (ISIZE).
    let mut body = gzip(JSON);
    let last = body.len() - 1;
    body[last] ^= 0x01;
    assert_eq!(why(decode(Coding::Gzip, &body, 1 << 20)), INVALID);
    assert_eq!(why(decode(Coding::Brotli, JSON, 1 << 20)), INVALID);
    // The large-window Brotli extension (WBITS marker 0x11) is not RFC 7932.
    assert!(matches!(
        decode(Coding::Brotli, &[0x11, 0x00, 0x00], 1 << 20),
        Err(DecodeError::Corrupt { .. })
    ));
}

#[test]
fn messages_never_repeat_the_request() {
    let error = decode(Coding::Gzip, b"\x1f\x8b\x08secret", 1024).unwrap_err();
    assert!(!error.to_string().contains("secret"), "{error}");
}
