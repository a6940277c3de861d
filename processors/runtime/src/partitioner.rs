//! Kafka's default partitioner (murmur2), the one `partitioner=murmur2_random` selects in
//! librdkafka and Java clients and Redpanda's tools use: a task can tell which keys it owns.

/// Kafka's murmur2 hash of `data`.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= (tail[2] as u32) << 16;
    }
    if tail.len() >= 2 {
        h ^= (tail[1] as u32) << 8;
    }
    if !tail.is_empty() {
        h ^= tail[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition a keyed record lands on among `partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_kafkas_reference_values() {
        // The vectors of Kafka's own UtilsTest.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    /// `(key, murmur2, partition of 6, partition of 7)` as Kafka's Java client 4.1.1 computes
    /// them: `Utils.murmur2(key)` and `BuiltInPartitioner.partitionForKey(key, n)`, which is
    /// `Utils.toPositive(murmur2(key)) % n`, what its default partitioner does with a keyed
    /// record. Keys of 0 to 5 bytes take every tail branch; bytes over 0x7f catch a
    /// sign-extended byte; "21" hashes negative and lands on 0 of 6 only if the sign bit is
    /// masked off (`abs` would give 2).
    const JAVA_CLIENT: &[(&[u8], i32, i32, i32)] = &[
        (b"", 275646681, 3, 2),
        (b"a", -1563381124, 4, 5),
        (b"ab", 316155434, 2, 0),
        (b"abc", 479470107, 3, 4),
        (b"abcd", -1323649548, 2, 5),
        (b"abcde", 461995741, 1, 4),
        (b"21", -973932308, 0, 3),
        (b"foobar", -790332482, 0, 0),
        (b"alice", 1951417749, 3, 1),
        (b"root", 454932086, 2, 0),
        (b"order-42", 501153024, 0, 1),
        ("ünïcødé".as_bytes(), 2147241326, 2, 6),
        (&[0xff], -311467685, 3, 5),
        (&[0xff, 0xfe], 1717632651, 3, 0),
        (&[0xff, 0xfe, 0xfd], 998637092, 2, 5),
        (&[0x80, 0x81, 0x82, 0x83, 0x84], -1665622439, 3, 4),
    ];

    #[test]
    fn hashes_and_partitions_like_kafkas_java_client() {
        for &(key, hash, of_6, of_7) in JAVA_CLIENT {
            assert_eq!(murmur2(key), hash, "murmur2 of {key:?}");
            assert_eq!(partition_for(key, 6), of_6, "partition of 6 for {key:?}");
            assert_eq!(partition_for(key, 7), of_7, "partition of 7 for {key:?}");
        }
    }
}
