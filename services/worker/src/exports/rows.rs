//! Counting the rows of a file while it streams past.

use keel_commerce::exports::Format;

/// Counts records in CSV or NDJSON bytes fed in arbitrary chunks.
///
/// NDJSON: one record per newline (JSON text has no raw newline). CSV: a
/// newline ends a record only outside quotes — a quoted field may contain
/// newlines, and `""` (an escaped quote) toggles the state twice, which
/// leaves it unchanged; the header row is not a record.
#[derive(Debug, Clone)]
pub struct RowCounter {
    format: Format,
    in_quotes: bool,
    newlines: i64,
}

impl RowCounter {
    pub fn new(format: Format) -> Self {
        Self {
            format,
            in_quotes: false,
            newlines: 0,
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        match self.format {
            Format::Ndjson => {
                self.newlines += bytes.iter().filter(|&&b| b == b'\n').count() as i64;
            }
            Format::Csv => {
                for &byte in bytes {
                    match byte {
                        b'"' => self.in_quotes = !self.in_quotes,
                        b'\n' if !self.in_quotes => self.newlines += 1,
                        _ => {}
                    }
                }
            }
        }
    }

    /// Complete records seen so far.
    pub fn rows(&self) -> i64 {
        match self.format {
            Format::Ndjson => self.newlines,
            Format::Csv => (self.newlines - 1).max(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(format: Format, chunks: &[&[u8]]) -> i64 {
        let mut counter = RowCounter::new(format);
        for chunk in chunks {
            counter.feed(chunk);
        }
        counter.rows()
    }

    #[test]
    fn a_quoted_newline_does_not_end_a_csv_record() {
        let file: &[u8] = b"id,note\n1,\"two\nlines\"\n2,\"say \"\"hi\"\"\n\"\n3,plain\n";
        assert_eq!(count(Format::Csv, &[file]), 3);
    }

    #[test]
    fn chunk_boundaries_anywhere_give_the_same_count() {
        let file: &[u8] = b"id,note\n1,\"a\nb\"\n2,\"\"\"\"\n3,x\n";
        for split in 0..=file.len() {
            let (a, b) = file.split_at(split);
            assert_eq!(count(Format::Csv, &[a, b]), 3, "split at {split}");
        }
    }

    #[test]
    fn a_csv_with_only_its_header_has_no_rows() {
        assert_eq!(count(Format::Csv, &[b"id,status\n"]), 0);
        assert_eq!(count(Format::Csv, &[]), 0);
    }

    #[test]
    fn ndjson_counts_lines() {
        assert_eq!(
            count(Format::Ndjson, &[b"{\"a\":\"x\\ny\"}\n{\"a\":", b"1}\n"]),
            2
        );
    }
}
