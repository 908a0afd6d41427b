//! R2: multipart uploads, whole objects, heads, range reads and deletes.

use worker::js_sys::{Object, Reflect, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::Bucket;

use crate::core::state::PartRef;
use crate::ports::{ObjectStore, PortError};

use super::{js_err, worker_err};

pub struct R2(pub Bucket);

fn http_metadata(content_type: &str) -> JsValue {
    let options = Object::new();
    let http = Object::new();
    let _ = Reflect::set(&http, &"contentType".into(), &content_type.into());
    let _ = Reflect::set(&options, &"httpMetadata".into(), &http);
    options.into()
}

impl R2 {
    fn raw(&self) -> &worker::worker_sys::R2Bucket {
        self.0.as_ref().unchecked_ref()
    }

    fn upload(&self, key: &str, upload_id: &str) -> Result<worker::worker_sys::R2MultipartUpload, PortError> {
        self.raw()
            .resume_multipart_upload(key.to_string(), upload_id.to_string())
            .map(JsCast::unchecked_into)
            .map_err(js_err("r2.resume_upload"))
    }
}

impl ObjectStore for R2 {
    async fn create_upload(&self, key: &str) -> Result<String, PortError> {
        const OP: &str = "r2.create_upload";
        let promise = self
            .raw()
            .create_multipart_upload(key.to_string(), http_metadata("application/gzip"))
            .map_err(js_err(OP))?;
        let upload: worker::worker_sys::R2MultipartUpload =
            JsFuture::from(promise).await.map_err(js_err(OP))?.unchecked_into();
        upload.upload_id().map_err(js_err(OP))
    }

    async fn upload_part(&self, key: &str, upload_id: &str, number: u16, bytes: &[u8]) -> Result<String, PortError> {
        const OP: &str = "r2.upload_part";
        // Copied straight into JavaScript memory: no second part-sized buffer in wasm.
        let data = Uint8Array::from(bytes);
        let promise = self
            .upload(key, upload_id)?
            .upload_part(number, data.into())
            .map_err(js_err(OP))?;
        let part = JsFuture::from(promise).await.map_err(js_err(OP))?;
        Reflect::get(&part, &"etag".into())
            .ok()
            .and_then(|e| e.as_string())
            .ok_or_else(|| PortError::transient(OP, "R2 returned a part without an etag"))
    }

    async fn complete_upload(&self, key: &str, upload_id: &str, parts: &[PartRef]) -> Result<(), PortError> {
        const OP: &str = "r2.complete";
        let list: Vec<JsValue> = parts
            .iter()
            .map(|p| {
                let o = Object::new();
                let _ = Reflect::set(&o, &"partNumber".into(), &JsValue::from(p.number));
                let _ = Reflect::set(&o, &"etag".into(), &JsValue::from_str(&p.etag));
                o.into()
            })
            .collect();
        let promise = self.upload(key, upload_id)?.complete(list).map_err(js_err(OP))?;
        JsFuture::from(promise).await.map_err(js_err(OP))?;
        Ok(())
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), PortError> {
        const OP: &str = "r2.abort";
        let promise = self.upload(key, upload_id)?.abort().map_err(js_err(OP))?;
        JsFuture::from(promise).await.map_err(js_err(OP))?;
        Ok(())
    }

    async fn put(&self, key: &str, body: &[&[u8]], content_type: &str) -> Result<(), PortError> {
        const OP: &str = "r2.put";
        // Copied straight into JavaScript memory, like a part, slice by slice.
        let data = Uint8Array::new_with_length(body.iter().map(|b| b.len() as u32).sum());
        let mut at = 0u32;
        for slice in body {
            data.subarray(at, at + slice.len() as u32).copy_from(slice);
            at += slice.len() as u32;
        }
        let promise = self
            .raw()
            .put(key.to_string(), data.into(), http_metadata(content_type))
            .map_err(js_err(OP))?;
        JsFuture::from(promise).await.map_err(js_err(OP))?;
        Ok(())
    }

    async fn head(&self, key: &str) -> Result<Option<u64>, PortError> {
        let o = self.0.head(key).await.map_err(worker_err("r2.head"))?;
        Ok(o.map(|o| o.size()))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Vec<u8>>, PortError> {
        const OP: &str = "r2.get";
        if len == 0 {
            return Ok(self.head(key).await?.map(|_| Vec::new()));
        }
        let o = self
            .0
            .get(key)
            .range(worker::Range::OffsetWithLength { offset, length: len })
            .execute()
            .await
            .map_err(worker_err(OP))?;
        let Some(object) = o else { return Ok(None) };
        match object.body() {
            None => Ok(None),
            Some(body) => body.bytes().await.map(Some).map_err(worker_err(OP)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.0.delete(key).await.map_err(worker_err("r2.delete"))
    }
}
