//! The in-memory [`Image`] provider.

use async_trait::async_trait;
use bluegreen_core::labels::{self, Labels};
use bluegreen_core::{App, Error, Event, EventSink, Image, ImageId, ImageRef, ImageSource, Result};

use crate::fault::Op;
use crate::platform::{MemoryPlatform, StoredImage};

/// Images of the [`MemoryPlatform`]. A source's image id is a hash of the source, so
/// that preparing the same source twice gives the same image.
///
/// Supports [`ImageSource::Reference`] (any name; what
/// [`MemoryPlatform::set_behaviour`] keys on), [`ImageSource::Build`] (reports three
/// lines of build output) and [`ImageSource::Id`] of an image it holds.
#[derive(Clone)]
pub struct MemoryImage {
    pub(crate) platform: MemoryPlatform,
}

impl std::fmt::Debug for MemoryImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryImage").finish_non_exhaustive()
    }
}

fn content_id(text: &str) -> ImageId {
    // FNV-1a: stable across runs and Rust versions
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    ImageId::new(format!("mem-{h:016x}"))
}

#[async_trait]
impl Image for MemoryImage {
    async fn prepare(
        &self,
        app: &App,
        source: &ImageSource,
        events: &EventSink,
    ) -> Result<ImageRef> {
        self.platform.call(Op::Prepare).await?;
        let reference = match source {
            ImageSource::Id(id) => {
                let state = self.platform.state();
                let image = state
                    .images
                    .get(id)
                    .ok_or_else(|| Error::not_found(format!("image {id}")))?;
                return Ok(ImageRef::new(
                    id.clone(),
                    app.clone(),
                    image.created_at,
                    source.to_string(),
                ));
            }
            ImageSource::Reference(r) => r.clone(),
            ImageSource::Build { context, .. } => {
                for line in [
                    "Step 1/3 : FROM scratch",
                    "Step 2/3 : COPY app /app",
                    "Step 3/3 : CMD [\"/app\"]",
                ] {
                    events.emit(Event::BuildOutput { line: line.into() });
                }
                context.display().to_string()
            }
            other => {
                return Err(Error::not_supported(format!(
                    "{other} on the memory platform"
                )))
            }
        };
        let id = content_id(&format!("{app}/{reference}"));
        let mut state = self.platform.state();
        let behaviour = state
            .behaviours
            .get(&reference)
            .cloned()
            .unwrap_or_default();
        let created_at = match state.images.get(&id) {
            Some(existing) => existing.created_at,
            None => state.now(),
        };
        let mut image_labels: Labels = labels::app_labels(app);
        image_labels.insert(labels::IMAGE.into(), id.to_string());
        state.images.insert(
            id.clone(),
            StoredImage {
                labels: image_labels,
                app: app.clone(),
                created_at,
                origin: source.to_string(),
                reference: reference.clone(),
                behaviour,
            },
        );
        Ok(ImageRef::new(
            id,
            app.clone(),
            created_at,
            source.to_string(),
        ))
    }

    async fn images(&self, app: &App) -> Result<Vec<ImageRef>> {
        self.platform.call(Op::Images).await?;
        let state = self.platform.state();
        Ok(state
            .images
            .iter()
            .filter(|(_, i)| labels::is_owned_by(&i.labels, app))
            .map(|(id, i)| ImageRef::new(id.clone(), i.app.clone(), i.created_at, i.origin.clone()))
            .collect())
    }

    async fn remove(&self, app: &App, id: &ImageId) -> Result<()> {
        self.platform.call(Op::RemoveImage).await?;
        let mut state = self.platform.state();
        let Some(image) = state.images.get(id) else {
            return Ok(());
        };
        if !labels::is_owned_by(&image.labels, app) {
            return Ok(());
        }
        let in_use = state
            .groups
            .iter()
            .any(|g| g.labels.get(labels::IMAGE).map(String::as_str) == Some(id.as_str()));
        if in_use {
            return Err(Error::conflict(format!("image {id} is used by a group")));
        }
        state.images.remove(id);
        Ok(())
    }
}
