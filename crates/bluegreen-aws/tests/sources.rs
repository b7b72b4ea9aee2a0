//! A source that cannot become an AMI is refused while the request is validated,
//! naming the field and why, before any call to AWS.

mod support;

use std::time::Duration;

use bluegreen_aws::{
    AmiImage, AmiImageOptions, Ec2Fleet, Ec2FleetOptions, ElbRouter, ElbRouterOptions,
};
use bluegreen_core::{App, Engine, ErrorKind, ImageId, ImageSource};
use bluegreen_testkit::conformance::{self, Refused};

fn bake(base: &str, script: &str) -> ImageSource {
    ImageSource::Bake {
        base: base.into(),
        script: script.into(),
    }
}

#[tokio::test]
async fn impossible_sources_are_refused_before_any_call() {
    let clients = support::clients().await;
    let engine = |builder: &str| {
        let mut options = AmiImageOptions::default().with_poll_interval(Duration::from_millis(100));
        options.builder_instance_type = builder.into();
        Engine::new(
            AmiImage::new(clients.clone(), options),
            Ec2Fleet::new(clients.clone(), Ec2FleetOptions::default()).unwrap(),
            ElbRouter::new(
                clients.clone(),
                ElbRouterOptions::new(
                    "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/x/1/2",
                    "vpc-1",
                ),
            ),
        )
    };
    let app = App::new("sources", "aws").unwrap();
    let script = "#!/bin/sh\nshutdown -h now\n";
    let cases: Vec<(&str, ImageSource, ErrorKind, &str)> = vec![
        (
            "t3.micro",
            ImageSource::Id(ImageId::new("ami-xyz")),
            ErrorKind::Invalid,
            "invalid source: `ami-xyz` is not an AMI id",
        ),
        (
            "t3.micro",
            ImageSource::Id(ImageId::new("web:2")),
            ErrorKind::Invalid,
            "`web:2` is not an AMI id",
        ),
        (
            "t3.micro",
            ImageSource::Reference("tag:Role".into()),
            ErrorKind::Invalid,
            "`Role` is not Key=Value",
        ),
        (
            "t3.micro",
            ImageSource::Reference("  ".into()),
            ErrorKind::Invalid,
            "invalid source: must not be empty",
        ),
        (
            "t3.micro",
            bake("ubuntu", script),
            ErrorKind::Invalid,
            "invalid source.base: `ubuntu` is not an AMI id",
        ),
        (
            "t3.micro",
            bake("ami-0123abcd", " \n"),
            ErrorKind::Invalid,
            "invalid source.script",
        ),
        (
            "t3.micro",
            bake("ami-0123abcd", &"x".repeat(16 * 1024 + 1)),
            ErrorKind::Invalid,
            "16384 at most",
        ),
        (
            "big",
            bake("ami-0123abcd", script),
            ErrorKind::Invalid,
            "invalid builder_instance_type: `big` is not an instance type",
        ),
        (
            "t3.micro",
            ImageSource::Artifact("/etc/hostname".into()),
            ErrorKind::NotSupported,
            "AMIs come by id, reference or bake",
        ),
    ];
    let before = clients.call_counts();
    for (builder, source, kind, why) in cases {
        let refused = [Refused::new(source, kind, why)];
        conformance::sources_refused(&engine(builder), &app, &refused).await;
    }
    assert_eq!(clients.call_counts(), before, "no call was made");
}
