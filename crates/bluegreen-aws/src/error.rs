//! AWS errors into the core's kinds, keeping the AWS error code.

use aws_sdk_ec2::error::ProvideErrorMetadata;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use bluegreen_core::Error;

/// Maps an SDK error. `what` says what was being done (`RunInstances web-production-v007`).
pub(crate) fn map<E>(what: &str, e: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().unwrap_or_default().to_owned();
    let message = e.message().unwrap_or_default().to_owned();
    let text = if code.is_empty() {
        format!(
            "{what}: {}",
            aws_smithy_types::error::display::DisplayErrorContext(&e)
        )
    } else {
        format!("{what}: {code}: {message}")
    };
    match &e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            return Error::Provider {
                provider: "aws",
                message: text,
                retryable: true,
                source: Some(Box::new(e)),
            }
        }
        _ => {}
    }
    let server_error = e
        .raw_response()
        .is_some_and(|r| r.status().is_server_error());
    match code.as_str() {
        "RequestLimitExceeded"
        | "Throttling"
        | "ThrottlingException"
        | "TooManyRequestsException" => Error::RateLimited {
            message: text,
            retry_after: None,
        },
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" | "AuthFailure" => {
            Error::PermissionDenied { message: text }
        }
        c if c.ends_with(".NotFound") || c.ends_with("NotFound") => Error::NotFound { what: text },
        c if c.starts_with("Duplicate") || c == "ResourceInUse" || c == "IncorrectState" => {
            Error::Conflict { message: text }
        }
        c if c.starts_with("InvalidParameter")
            || c.ends_with(".Malformed")
            || c == "ValidationError"
            || c == "MissingParameter" =>
        {
            Error::Invalid {
                field: what.to_owned(),
                reason: format!("{code}: {message}"),
            }
        }
        "InsufficientInstanceCapacity"
        | "InternalError"
        | "ServiceUnavailable"
        | "Unavailable"
        | "InternalFailure" => Error::Provider {
            provider: "aws",
            message: text,
            retryable: true,
            source: Some(Box::new(e)),
        },
        _ => Error::Provider {
            provider: "aws",
            message: text,
            retryable: server_error,
            source: Some(Box::new(e)),
        },
    }
}
