//! Aligned tables for people: a header row and left-aligned columns two spaces apart.

/// Rows under a header, printed with every column as wide as its widest cell.
pub(crate) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(header: &[&'static str]) -> Self {
        Self { header: header.to_vec(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as text, one line per row, header first.
    pub(crate) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(width) = widths.get_mut(i) {
                    *width = (*width).max(cell.chars().count());
                }
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> =
                cells.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            padded.join("  ").trim_end().to_owned()
        };
        let mut out = vec![line(self.header.clone())];
        out.extend(self.rows.iter().map(|row| line(row.iter().map(String::as_str).collect())));
        out.join("\n")
    }
}

/// `k=v,k=v`, or `-` for none.
pub(crate) fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let text: Vec<String> = map.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
    if text.is_empty() { "-".into() } else { text.join(",") }
}

/// A long id or digest cut to its first `n` characters, for a table.
pub(crate) fn short(id: &str, n: usize) -> String {
    id.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_to_their_widest_cell() {
        let mut table = Table::new(&["ID", "NAME"]);
        table.row(vec!["a".into(), "first".into()]);
        table.row(vec!["longer".into(), "x".into()]);
        assert_eq!(table.render(), "ID      NAME\na       first\nlonger  x");
    }
}
