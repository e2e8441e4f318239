//! How many copies JetStream keeps of what Ferry stores. On a NATS cluster, a bucket with one
//! replica lives on one node and is gone while that node is; the lattice's own buckets and the
//! components' stores are given more ([`ensure_replicas`]) so that a node can die with nothing
//! lost and nothing unreachable.

use async_nats::jetstream;
use ferry_proto::subject::{self, kv_stream, object_stream};
use tracing::{info, warn};

use crate::{LatticeError, replay::ReplayRecord};

/// The most replicas JetStream keeps of a stream.
pub const MAX_REPLICAS: usize = 5;

/// Make `stream` keep at least `replicas` copies: an existing stream with fewer is raised
/// (JetStream copies its data to more nodes); one with as many or more is left alone.
///
/// # Errors
/// [`LatticeError::Invalid`] for more than [`MAX_REPLICAS`], [`LatticeError::Nats`] when
/// JetStream refuses (a single server cannot hold more than one replica).
pub async fn ensure_replicas(js: &jetstream::Context, stream: &str, replicas: usize) -> Result<(), LatticeError> {
    if replicas > MAX_REPLICAS {
        return Err(LatticeError::Invalid(format!(
            "{replicas} replicas asked for; JetStream keeps at most {MAX_REPLICAS}"
        )));
    }
    let mut handle =
        js.get_stream(stream).await.map_err(|e| LatticeError::Nats(format!("cannot open stream {stream}: {e}")))?;
    let info = handle.info().await.map_err(|e| LatticeError::Nats(format!("cannot read stream {stream}: {e}")))?;
    if info.config.num_replicas >= replicas {
        return Ok(());
    }
    let mut config = info.config.clone();
    let before = config.num_replicas;
    config.num_replicas = replicas;
    js.update_stream(config)
        .await
        .map_err(|e| LatticeError::Nats(format!("cannot give stream {stream} {replicas} replicas: {e}")))?;
    info!(stream, before, replicas, "raised the stream's replicas");
    Ok(())
}

/// Make the lattice's own stores — its bucket of links and configs, its uploaded components,
/// its replay record — exist and keep at least `replicas` copies. A host does this as it
/// starts; with one replica there is nothing to do beyond what opening them on first use does.
///
/// # Errors
/// As [`ensure_replicas`], or when a store cannot be created.
pub async fn prepare_lattice_storage(
    nats: &async_nats::Client,
    lattice: &str,
    replicas: usize,
) -> Result<(), LatticeError> {
    if replicas <= 1 {
        return Ok(());
    }
    crate::LatticeBucket::open(nats, lattice, true).await?;
    crate::ComponentStore::open(nats, lattice).await?;
    ReplayRecord::new(nats.clone(), lattice)
        .open()
        .await
        .map_err(|e| LatticeError::Nats(format!("cannot open the replay record: {e}")))?;
    let js = crate::nats::jetstream(nats, None);
    for stream in [
        kv_stream(&subject::data_bucket(lattice)?),
        object_stream(&subject::component_store(lattice)?),
        kv_stream(&subject::seen_bucket(lattice)?),
    ] {
        if let Err(err) = ensure_replicas(&js, &stream, replicas).await {
            warn!(stream, replicas, cause = %err, "cannot give the lattice's store the replicas asked for");
            return Err(err);
        }
    }
    Ok(())
}

/// Parse a `replicas` setting (a link's target config, a flag): 1 to [`MAX_REPLICAS`].
///
/// # Errors
/// A message naming the allowed range.
pub fn parse_replicas(value: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MAX_REPLICAS).contains(&n) => Ok(n),
        _ => Err(format!("invalid replicas {value:?}: a number from 1 to {MAX_REPLICAS}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replicas_are_one_to_five() {
        assert_eq!(super::parse_replicas("3"), Ok(3));
        for bad in ["0", "6", "three", "-1", ""] {
            assert!(super::parse_replicas(bad).is_err(), "{bad}");
        }
    }
}
