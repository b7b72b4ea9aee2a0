//! bluegreen's labels as AWS tags, and the filters that find them.

use bluegreen_core::labels::{self, Labels};
use bluegreen_core::App;

/// EC2 filters that select resources tagged as `app`'s.
pub(crate) fn ec2_owner_filters(app: &App) -> Vec<aws_sdk_ec2::types::Filter> {
    labels::app_labels(app)
        .into_iter()
        .map(|(k, v)| {
            aws_sdk_ec2::types::Filter::builder()
                .name(format!("tag:{k}"))
                .values(v)
                .build()
        })
        .collect()
}

/// The EC2 filter that selects instances that are not terminated (pending,
/// running, stopping or stopped): those that hold an AMI in use and that a group
/// still counts; `shutting-down` and `terminated` ones are on their way out.
pub(crate) fn ec2_not_terminated_filter() -> aws_sdk_ec2::types::Filter {
    aws_sdk_ec2::types::Filter::builder()
        .name("instance-state-name")
        .set_values(Some(
            ["pending", "running", "stopping", "stopped"]
                .map(String::from)
                .to_vec(),
        ))
        .build()
}

/// EC2 tags from labels.
pub(crate) fn ec2_tags(labels: &Labels) -> Vec<aws_sdk_ec2::types::Tag> {
    labels
        .iter()
        .map(|(k, v)| aws_sdk_ec2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

/// Labels from EC2 tags.
pub(crate) fn ec2_labels(tags: &[aws_sdk_ec2::types::Tag]) -> Labels {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}

/// ELBv2 tags from labels.
pub(crate) fn elb_tags(labels: &Labels) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
    labels
        .iter()
        .map(|(k, v)| {
            aws_sdk_elasticloadbalancingv2::types::Tag::builder()
                .key(k)
                .value(v)
                .build()
        })
        .collect()
}

/// Labels from ELBv2 tags.
pub(crate) fn elb_labels(tags: &[aws_sdk_elasticloadbalancingv2::types::Tag]) -> Labels {
    tags.iter()
        .filter_map(|t| Some((t.key()?.to_owned(), t.value()?.to_owned())))
        .collect()
}
