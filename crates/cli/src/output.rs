//! Output: a small aligned-column table, key/value listings, and how ids, durations,
//! resources, money and maps look in tables. JSON output is serde_json of the API's
//! messages (see `emit`).

use crate::cli::OutputFormat;
use crate::exit::CliError;
use corral_client::pb;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Rows of cells under headers, printed with columns aligned (two spaces apart; the
/// last column is not padded).
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|header| header.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are blank, extra cells are dropped.
    pub fn row(&mut self, mut cells: Vec<String>) {
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let lines: Vec<&Vec<String>> = std::iter::once(&self.headers).chain(&self.rows).collect();
        render_aligned(&lines)
    }
}

/// Columns aligned by character count, cells sanitised to one line.
fn render_aligned(lines: &[&Vec<String>]) -> String {
    let columns = lines.iter().map(|line| line.len()).max().unwrap_or(0);
    let cells: Vec<Vec<String>> = lines
        .iter()
        .map(|line| line.iter().map(|cell| one_line(cell)).collect())
        .collect();
    let mut widths = vec![0; columns];
    for line in &cells {
        for (column, cell) in line.iter().enumerate() {
            widths[column] = widths[column].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for line in &cells {
        let mut text = String::new();
        for (column, cell) in line.iter().enumerate() {
            if column + 1 < line.len() {
                text.push_str(cell);
                let padding = widths[column] - cell.chars().count() + 2;
                text.extend(std::iter::repeat_n(' ', padding));
            } else {
                text.push_str(cell);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    }
    out
}

/// A cell with control characters (newlines, tabs, escapes) replaced by spaces.
fn one_line(cell: &str) -> String {
    cell.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `field  value` lines, aligned, for showing one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let lines: Vec<Vec<String>> = pairs
        .iter()
        .map(|(name, value)| vec![format!("{name}:"), value.clone()])
        .collect();
    render_aligned(&lines.iter().collect::<Vec<_>>())
}

/// Prints `value` as pretty JSON, or the table `render` makes of it.
pub fn emit<T: Serialize>(
    format: OutputFormat,
    value: &T,
    render: impl FnOnce(&T) -> String,
) -> Result<(), CliError> {
    let text = match format {
        OutputFormat::Json => {
            let mut json = serde_json::to_string_pretty(value)
                .map_err(|error| CliError::failed(format!("cannot print JSON: {error}")))?;
            json.push('\n');
            json
        }
        OutputFormat::Table => render(value),
    };
    print(&text)
}

/// Writes to stdout. When the reader went away (`corral events -f | head`) the
/// process ends quietly with success, as with SIGPIPE.
pub fn print(text: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => {
            std::process::exit(crate::exit::SUCCESS)
        }
        Err(error) => Err(CliError::failed(format!("cannot write output: {error}"))),
    }
}

/// `job-42`; `-` for 0 (no object).
pub fn id(prefix: &str, id: u64) -> String {
    if id == 0 {
        "-".to_string()
    } else {
        format!("{prefix}-{id}")
    }
}

/// `-` for an empty string.
pub fn text(value: &str) -> String {
    if value.is_empty() {
        "-".to_string()
    } else {
        value.to_string()
    }
}

/// A time (ms since the Unix epoch) in ms; `-` for 0.
pub fn time_ms(ms: u64) -> String {
    if ms == 0 {
        "-".to_string()
    } else {
        ms.to_string()
    }
}

/// A duration for people: `850ms`, `12s`, `5m 3s`, `2h 10m`, `3d 4h`.
pub fn duration(ms: u64) -> String {
    let seconds = ms / 1000;
    let (minutes, hours, days) = (seconds / 60, seconds / 3600, seconds / 86_400);
    if ms < 1000 {
        format!("{ms}ms")
    } else if seconds < 60 {
        format!("{seconds}s")
    } else if minutes < 60 {
        format!("{minutes}m {}s", seconds % 60)
    } else if hours < 24 {
        format!("{hours}h {}m", minutes % 60)
    } else {
        format!("{days}d {}h", hours % 24)
    }
}

/// A duration limit: `-` when 0 (none).
pub fn optional_duration(ms: u64) -> String {
    if ms == 0 {
        "-".to_string()
    } else {
        duration(ms)
    }
}

/// `cpu=4000m mem=8192Mi acc=8` (disk and bandwidth only when set); `-` when all 0.
pub fn resources(resources: Option<&pb::Resources>) -> String {
    let Some(resources) = resources else {
        return "-".to_string();
    };
    let mut parts = vec![
        format!("cpu={}m", resources.cpu_millicores),
        format!("mem={}Mi", resources.memory_mib),
        format!("acc={}", resources.accelerators),
    ];
    if resources.disk_gib != 0 {
        parts.push(format!("disk={}Gi", resources.disk_gib));
    }
    if resources.bandwidth_mbps != 0 {
        parts.push(format!("bw={}Mbps", resources.bandwidth_mbps));
    }
    if *resources == pb::Resources::default() {
        return "-".to_string();
    }
    parts.join(" ")
}

/// An amount in micro-units as a decimal with six places: `12.500000`.
pub fn money(micros: u64) -> String {
    format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000)
}

/// `k=v,k2=v2`; `-` when empty.
pub fn map(map: &BTreeMap<String, String>) -> String {
    if map.is_empty() {
        return "-".to_string();
    }
    map.iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Items joined with `,`; `-` when empty.
pub fn list<T: ToString>(items: &[T]) -> String {
    if items.is_empty() {
        return "-".to_string();
    }
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn yes_no(value: bool) -> String {
    if value { "yes" } else { "no" }.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_under_headers() {
        let mut table = Table::new(&["ID", "NAME", "STATE"]);
        table.row(vec![
            "job-1".into(),
            "resnet-long-name".into(),
            "Running".into(),
        ]);
        table.row(vec!["job-12".into(), "x".into(), "Pending".into()]);
        assert_eq!(
            table.render(),
            "ID      NAME              STATE\n\
             job-1   resnet-long-name  Running\n\
             job-12  x                 Pending\n"
        );
    }

    #[test]
    fn tables_pad_short_rows_and_keep_cells_on_one_line() {
        let mut table = Table::new(&["A", "B"]);
        table.row(vec!["ä\nb".into()]);
        assert_eq!(table.render(), "A    B\nä b\n");
        assert_eq!(Table::new(&["ONLY"]).render(), "ONLY\n");
    }

    #[test]
    fn fields_are_aligned() {
        assert_eq!(
            fields(&[("id", "pool-3".into()), ("status", "Running".into())]),
            "id:      pool-3\nstatus:  Running\n"
        );
    }

    #[test]
    fn values_for_people() {
        assert_eq!(id("job", 42), "job-42");
        assert_eq!(id("pool", 0), "-");
        assert_eq!(duration(850), "850ms");
        assert_eq!(duration(12_400), "12s");
        assert_eq!(duration(303_000), "5m 3s");
        assert_eq!(duration(7_800_000), "2h 10m");
        assert_eq!(duration(273_600_000), "3d 4h");
        assert_eq!(optional_duration(0), "-");
        assert_eq!(money(12_500_000), "12.500000");
        assert_eq!(money(5), "0.000005");
        let resources_value = pb::Resources {
            cpu_millicores: 4000,
            memory_mib: 8192,
            accelerators: 8,
            disk_gib: 0,
            bandwidth_mbps: 0,
        };
        assert_eq!(
            resources(Some(&resources_value)),
            "cpu=4000m mem=8192Mi acc=8"
        );
        assert_eq!(resources(Some(&pb::Resources::default())), "-");
        assert_eq!(resources(None), "-");
        let labels = BTreeMap::from([
            ("a".to_string(), "1".to_string()),
            ("b".to_string(), String::new()),
        ]);
        assert_eq!(map(&labels), "a=1,b=");
        assert_eq!(list::<String>(&[]), "-");
        assert_eq!(time_ms(0), "-");
    }
}
