//! An in-memory key-value provider on the SDK: the Rust twin of the bridge's gRPC stub
//! (ferry-test-grpc-provider), doing the same work per call, so that the benchmark's
//! difference between the two is what the bridge adds.

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
};

use ferry_provider_sdk::{
    InvocationContext, LinkPut, Provider, ProviderContext, RpcError,
    keyvalue::{self, KeyValue, KeyValuePair, ListKeysResponse},
    run_process,
};

#[derive(Default)]
struct MemoryKv {
    data: Mutex<HashMap<(String, String), Vec<u8>>>,
}

impl MemoryKv {
    fn data(&self) -> MutexGuard<'_, HashMap<(String, String), Vec<u8>>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn key(bucket: &str, key: &str) -> (String, String) {
    (bucket.to_owned(), key.to_owned())
}

impl Provider for MemoryKv {
    type Link = ();

    async fn handle(&self, ctx: InvocationContext, operation: &str, payload: Vec<u8>) -> Result<Vec<u8>, RpcError> {
        keyvalue::dispatch(self, &ctx, operation, &payload).await
    }

    async fn on_link_put(&self, _: &ProviderContext, _: &LinkPut) -> Result<(), String> {
        Ok(())
    }
}

impl KeyValue for MemoryKv {
    async fn get(&self, _: &InvocationContext, bucket: &str, k: &str) -> Result<Option<Vec<u8>>, RpcError> {
        Ok(self.data().get(&key(bucket, k)).cloned())
    }

    async fn set(&self, _: &InvocationContext, bucket: &str, k: &str, value: Vec<u8>) -> Result<(), RpcError> {
        self.data().insert(key(bucket, k), value);
        Ok(())
    }

    async fn delete(&self, _: &InvocationContext, bucket: &str, k: &str) -> Result<(), RpcError> {
        self.data().remove(&key(bucket, k));
        Ok(())
    }

    async fn exists(&self, _: &InvocationContext, bucket: &str, k: &str) -> Result<bool, RpcError> {
        Ok(self.data().contains_key(&key(bucket, k)))
    }

    async fn list_keys(
        &self,
        _: &InvocationContext,
        bucket: &str,
        _: Option<u64>,
    ) -> Result<ListKeysResponse, RpcError> {
        let mut keys: Vec<String> = self.data().keys().filter(|(b, _)| b == bucket).map(|(_, k)| k.clone()).collect();
        keys.sort();
        Ok(ListKeysResponse { keys, cursor: None })
    }

    async fn increment(&self, _: &InvocationContext, bucket: &str, k: &str, delta: u64) -> Result<u64, RpcError> {
        let mut data = self.data();
        let entry = data.entry(key(bucket, k)).or_insert_with(|| b"0".to_vec());
        let value = std::str::from_utf8(entry)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .and_then(|v| v.checked_add(delta))
            .ok_or_else(|| RpcError::bad_request(format!("value of {k:?} is not a decimal unsigned integer")))?;
        *entry = value.to_string().into_bytes();
        Ok(value)
    }

    async fn get_many(
        &self,
        _: &InvocationContext,
        bucket: &str,
        keys: Vec<String>,
    ) -> Result<Vec<Option<KeyValuePair>>, RpcError> {
        let data = self.data();
        Ok(keys
            .into_iter()
            .map(|k| data.get(&key(bucket, &k)).map(|value| KeyValuePair { key: k, value: value.clone() }))
            .collect())
    }

    async fn set_many(&self, _: &InvocationContext, bucket: &str, items: Vec<KeyValuePair>) -> Result<(), RpcError> {
        let mut data = self.data();
        for item in items {
            data.insert(key(bucket, &item.key), item.value);
        }
        Ok(())
    }

    async fn delete_many(&self, _: &InvocationContext, bucket: &str, keys: Vec<String>) -> Result<(), RpcError> {
        let mut data = self.data();
        for k in keys {
            data.remove(&key(bucket, &k));
        }
        Ok(())
    }
}

fn main() -> Result<(), ferry_provider_sdk::SdkError> {
    run_process(MemoryKv::default())
}
