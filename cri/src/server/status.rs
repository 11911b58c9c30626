//! gRPC status codes for the daemon's errors, and request-field checks that
//! name the offending field as upstream runtimes do.

use tonic::Status;

use crate::image::ImageError;

/// `field` must not be empty.
pub fn required<'a>(value: &'a str, field: &str) -> Result<&'a str, Status> {
    if value.is_empty() {
        Err(Status::invalid_argument(format!("{field} must be set")))
    } else {
        Ok(value)
    }
}

/// `field` (a message) must be present.
pub fn present<'a, T>(value: &'a Option<T>, field: &str) -> Result<&'a T, Status> {
    value
        .as_ref()
        .ok_or_else(|| Status::invalid_argument(format!("{field} must be set")))
}

pub fn image_status(error: ImageError) -> Status {
    match &error {
        ImageError::Shared(inner) => {
            let code = image_code(inner);
            Status::new(code, error.to_string())
        }
        _ => Status::new(image_code(&error), error.to_string()),
    }
}

fn image_code(error: &ImageError) -> tonic::Code {
    use tonic::Code;
    match error {
        ImageError::InvalidReference { .. } => Code::InvalidArgument,
        ImageError::NotFound(_) => Code::NotFound,
        ImageError::InUse { .. } => Code::FailedPrecondition,
        ImageError::Registry {
            status: Some(401 | 403),
            ..
        } => Code::PermissionDenied,
        ImageError::Registry {
            status: Some(404), ..
        } => Code::NotFound,
        ImageError::NoMatchingPlatform { .. } => Code::NotFound,
        e if e.is_transient() => Code::Unavailable,
        ImageError::Shared(inner) => image_code(inner),
        _ => Code::Unknown,
    }
}

/// Nanoseconds since the epoch, CRI's timestamp unit.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
