//! Size bounds on request fields, checked before anything is copied out of a request,
//! and the page size of list calls.

use super::status::invalid_argument;
use corral_model::limits::MAX_LIST_PAGE;
use corral_wire::pb;
use std::collections::BTreeMap;
use tonic::Status;

/// At most this many characters of a rejected value are echoed back in a message.
const ECHO_CHARACTERS: usize = 40;

/// The start of a user-supplied value, for an error message.
pub fn echo(text: &str) -> String {
    text.chars().take(ECHO_CHARACTERS).collect()
}

pub fn check_text(field: &str, text: &str, max_bytes: usize) -> Result<(), Status> {
    if text.len() > max_bytes {
        return Err(invalid_argument(
            field,
            format!("must be at most {max_bytes} bytes (got {})", text.len()),
        ));
    }
    Ok(())
}

/// A copy of `text` after checking its size.
pub fn bounded_text(field: &str, text: &str, max_bytes: usize) -> Result<String, Status> {
    check_text(field, text, max_bytes)?;
    Ok(text.to_string())
}

/// Like `bounded_text`, with the empty string (the protobuf default) meaning `None`.
pub fn optional_text(field: &str, text: &str, max_bytes: usize) -> Result<Option<String>, Status> {
    check_text(field, text, max_bytes)?;
    Ok((!text.is_empty()).then(|| text.to_string()))
}

pub fn check_count(field: &str, count: usize, max_count: usize) -> Result<(), Status> {
    if count > max_count {
        return Err(invalid_argument(
            field,
            format!("must have at most {max_count} entries (got {count})"),
        ));
    }
    Ok(())
}

/// A copy of a string list after checking its length and then each entry's size.
pub fn bounded_strings(
    field: &str,
    values: &[String],
    max_count: usize,
    max_bytes: usize,
) -> Result<Vec<String>, Status> {
    check_count(field, values.len(), max_count)?;
    values
        .iter()
        .enumerate()
        .map(|(index, value)| bounded_text(&format!("{field}[{index}]"), value, max_bytes))
        .collect()
}

/// A copy of a string map after checking its size and then each key and value.
pub fn bounded_map(
    field: &str,
    map: &BTreeMap<String, String>,
    max_entries: usize,
    max_key_bytes: usize,
    max_value_bytes: usize,
) -> Result<BTreeMap<String, String>, Status> {
    check_count(field, map.len(), max_entries)?;
    for (key, value) in map {
        check_text(&format!("{field}.key"), key, max_key_bytes)?;
        check_text(&format!("{field}[{}]", echo(key)), value, max_value_bytes)?;
    }
    Ok(map.clone())
}

/// Items a list call returns: the requested limit, capped at `MAX_LIST_PAGE`; no page
/// or a limit of 0 means the largest page.
pub fn page_limit(page: Option<&pb::Page>) -> usize {
    match page.map(|page| page.limit) {
        None | Some(0) => MAX_LIST_PAGE,
        Some(limit) => {
            usize::try_from(limit).map_or(MAX_LIST_PAGE, |limit| limit.min(MAX_LIST_PAGE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn oversize_text_and_lists_are_refused() {
        assert!(check_text("name", "abc", 3).is_ok());
        let status = check_text("name", "abcd", 3).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().starts_with("invalid name:"),
            "{}",
            status.message()
        );
        let values = vec!["a".to_string(); 3];
        assert!(bounded_strings("command", &values, 2, 10)
            .unwrap_err()
            .message()
            .contains("at most 2 entries"));
        let long = vec!["a".to_string(), "bbbb".to_string()];
        assert!(bounded_strings("command", &long, 2, 3)
            .unwrap_err()
            .message()
            .starts_with("invalid command[1]:"));
    }

    #[test]
    fn maps_are_bounded_by_entries_keys_and_values() {
        let map: BTreeMap<String, String> = [("k".to_string(), "vvvv".to_string())].into();
        assert_eq!(bounded_map("labels", &map, 1, 4, 4).unwrap(), map);
        assert!(bounded_map("labels", &map, 0, 4, 4).is_err());
        assert!(bounded_map("labels", &map, 1, 0, 4).is_err());
        assert!(bounded_map("labels", &map, 1, 4, 3)
            .unwrap_err()
            .message()
            .starts_with("invalid labels[k]:"));
    }

    #[test]
    fn empty_optional_text_is_none() {
        assert_eq!(optional_text("accelerator_type", "", 8).unwrap(), None);
        assert_eq!(
            optional_text("accelerator_type", "a100", 8).unwrap(),
            Some("a100".to_string())
        );
    }

    #[test]
    fn page_limits_are_capped() {
        assert_eq!(page_limit(None), MAX_LIST_PAGE);
        assert_eq!(page_limit(Some(&pb::Page { limit: 0 })), MAX_LIST_PAGE);
        assert_eq!(page_limit(Some(&pb::Page { limit: 5 })), 5);
        assert_eq!(
            page_limit(Some(&pb::Page { limit: u32::MAX })),
            MAX_LIST_PAGE
        );
    }
}
