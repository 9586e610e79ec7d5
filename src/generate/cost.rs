//! What a generation costs before it is drawn: the worst case its reservation holds
//! against the money budgets, and the typical cost `POST /v1/estimate` shows beside it.
//! Pure: the request, its inputs' sizes and the deployment's table decide it.

use super::chain::Chain;
use super::inputs::InputRecord;
use super::request::GenerationRequest;
use crate::config::Config;
use crate::metering::{CallShape, Micros, Prices, Tokens};

/// One request's estimates: per call (Gemini draws one image per call) and for its `n`.
#[derive(Debug, Clone, Copy)]
pub struct Estimate {
    pub prices: Prices,
    /// What Google documents for one call: the stand-in for an answer that reported no
    /// usage, and what test keys report.
    pub call_typical: Tokens,
    pub call_worst: Tokens,
    pub n: u32,
}

impl Estimate {
    /// `inputs`: each input image's width and height, when known; `chain`: the earlier
    /// turns it replays when it continues a conversation (their text and images count as
    /// input of every call).
    pub fn new(
        request: &GenerationRequest,
        inputs: &[(Option<u32>, Option<u32>)],
        chain: Option<&Chain>,
        config: &Config,
    ) -> Estimate {
        let caps = config.caps_or_defaults(&request.model);
        let (history_text, mut images) = chain.map(Chain::shape).unwrap_or_default();
        images.extend_from_slice(inputs);
        let call = CallShape {
            text_bytes: request.upstream_text().len() + history_text,
            inputs: &images,
            image_tokens: caps.image_tokens.at(request.output.resolution),
        };
        Estimate { prices: caps.pricing, call_typical: call.typical(), call_worst: call.worst(), n: request.n }
    }

    /// From the records of the inputs it was made from.
    pub fn of(request: &GenerationRequest, inputs: &[InputRecord], chain: Option<&Chain>, config: &Config) -> Estimate {
        let sizes: Vec<_> = inputs.iter().map(|input| (input.width, input.height)).collect();
        Estimate::new(request, &sizes, chain, config)
    }

    /// What the reservation holds: all `n` calls at their worst.
    pub fn worst_cost(&self) -> Micros {
        self.call_worst.times(self.n).cost(&self.prices)
    }
}
