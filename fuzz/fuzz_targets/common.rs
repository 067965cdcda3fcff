//! Helpers shared by the fuzz targets.

use tcp_router::proto::Parsed;

/// A cheap sample of split points in `0..len`: the first few bytes, the
/// thirds, the last byte, and two points chosen by the input's own bytes.
pub fn split_points(data: &[u8]) -> Vec<usize> {
    let len = data.len();
    let mut points = vec![1, 2, 3, 5, 6, 12, 13, 16, len / 3, len / 2, 2 * len / 3];
    points.push(len.saturating_sub(1));
    if let [.., a, b] = data {
        points.push(usize::from(u16::from_be_bytes([*a, *b])));
        points.push(usize::from(*a) * 7);
    }
    points.retain(|&p| p < len);
    points
}

/// Asserts that a parser's answer for a prefix of `data` is `Partial` or the
/// same as its answer for all of `data`: answers never change as bytes arrive.
pub fn check_prefixes<T, E>(data: &[u8], parse: impl Fn(&[u8]) -> Result<Parsed<T>, E>)
where
    T: PartialEq + std::fmt::Debug,
    E: PartialEq + std::fmt::Debug,
{
    let full = parse(data);
    for cut in split_points(data) {
        let prefix = parse(&data[..cut]);
        if !matches!(prefix, Ok(Parsed::Partial)) {
            assert_eq!(prefix, full, "prefix of {cut} bytes disagrees");
        }
    }
}
