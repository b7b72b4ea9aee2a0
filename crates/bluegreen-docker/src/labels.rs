//! How a group's labels live on Docker: the labels of containers and services,
//! the filters that select only bluegreen's, and groups read back from them.

use bluegreen_core::Result;

/// Converts Docker's label map to bluegreen's.
pub(crate) fn labels_of(
    labels: Option<&std::collections::HashMap<String, String>>,
) -> bluegreen_core::labels::Labels {
    labels
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// Docker `label=key=value` filters selecting what bluegreen created for `labels`.
pub(crate) fn label_filters(
    labels: &[(&str, &str)],
) -> std::collections::HashMap<String, Vec<String>> {
    let values = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    std::collections::HashMap::from([("label".to_owned(), values)])
}

/// The groups that labelled resources (`what`: containers, services) belong to,
/// one per group id, rebuilt from their records; resources of one group that carry
/// different records are [`Error::Conflict`](bluegreen_core::Error::Conflict).
pub(crate) fn groups_of<'a>(
    what: &str,
    labels: impl Iterator<Item = &'a bluegreen_core::labels::Labels>,
) -> Result<Vec<bluegreen_core::Group>> {
    use bluegreen_core::labels::{self, Labels};
    let mut records: std::collections::BTreeMap<String, (String, &Labels)> = Default::default();
    for l in labels {
        let (Some(id), Some(record)) = (l.get(labels::GROUP), l.get(crate::fleet::RECORD_LABEL))
        else {
            continue;
        };
        match records.get(id) {
            Some((r, _)) if r != record => {
                return Err(bluegreen_core::Error::conflict(format!(
                    "the {what} of group {id} carry different records"
                )))
            }
            Some(_) => {}
            None => {
                records.insert(id.clone(), (record.clone(), l));
            }
        }
    }
    records
        .values()
        .map(|(record, l)| bluegreen_core::Group::from_record(record, l))
        .collect()
}
