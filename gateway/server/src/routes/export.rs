//! `GET /v1/sessions/{key}/export`: the retained scrollback as an asciicast v2 recording,
//! streamed, the terminal's sizes from the journal's `resized` events.

use super::*;

/// A session's terminal sizes after its first, from its journal's `resized` events, in offset
/// order.
pub(super) async fn resizes(
    persist: &corral_actors::persist::Persist,
    id: uuid::Uuid,
) -> Result<Vec<corral_actors::persist::segment::Resize>, ApiError> {
    const PAGE: usize = 1000;
    let (mut out, mut after) = (Vec::new(), 0);
    loop {
        let events = persist.events_of(id, Some("resized"), after, PAGE).await?;
        let read = events.len();
        for e in events {
            after = e.seq;
            if let corral_actors::EventKind::Resized { rows, cols } = e.kind {
                out.push(corral_actors::persist::segment::Resize {
                    at: e.offset,
                    rows,
                    cols,
                });
            }
        }
        if read < PAGE {
            break;
        }
    }
    out.sort_by_key(|r| r.at);
    Ok(out)
}

/// `GET /v1/sessions/{key}/export?format=asciicast`: the retained scrollback as an asciicast v2
/// recording, streamed (written by a blocking task into a bounded channel: memory stays small
/// whatever the log's size, and the task ends at its first write after the client goes away).
pub(super) async fn export_session(
    State(app): State<Arc<App>>,
    Readable(h): Readable,
    Query(q): Query<ExportQuery>,
) -> Result<Response, ApiError> {
    match q.format.as_deref() {
        None | Some("asciicast") => {}
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "unknown export format '{other}' (asciicast)"
            )));
        }
    }
    let Some(persist) = app.corral.persist() else {
        return Err(ApiError::conflict("export needs persistence"));
    };
    let reader = persist.reader(h.id()).await?;
    let resizes = resizes(persist, h.id()).await?;
    // Before `resized` events were journaled the current size is the best guess.
    let size = match resizes.is_empty() {
        true => h.info().size,
        false => h.shared().first_size,
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(8);
    let writer = ChannelWriter(tx.clone());
    // Owned by the response's stream, which awaits it after the last chunk: it finishes with
    // the log or at the first write after the client left (the channel closes), so it cannot
    // outlive the request by more than one write; one that failed without saying (a panic)
    // ends the body with an error, never as a recording that looks whole.
    let task = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
        let result = reader
            .export_asciicast(&mut out, size.cols, size.rows, &resizes)
            .and_then(|()| out.flush());
        if let Err(e) = result
            && tx.blocking_send(Err(e)).is_err()
        {
            tracing::debug!("export abandoned by its client");
        }
    });
    let stream = futures::stream::unfold((rx, Some(task)), |(mut rx, task)| async move {
        if let Some(item) = rx.recv().await {
            return Some((item, (rx, task)));
        }
        match task?.await {
            Ok(()) => None,
            Err(e) => {
                tracing::error!(error = %e, "the export failed");
                let failed = std::io::Error::other(format!("the export failed: {e}"));
                Some((Err(failed), (rx, None)))
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-asciicast")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

/// A `Write` into a bounded channel (blocking: used from a blocking task only).
pub(super) struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Vec<u8>>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(buf.to_vec()))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client gone"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
