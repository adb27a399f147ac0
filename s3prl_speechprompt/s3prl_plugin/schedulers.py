"""fairseq's ``inverse_sqrt`` schedule (SpeechPrompt's FT-LM setting), offered to s3prl's runner by name.

s3prl resolves ``scheduler.name`` as ``s3prl.schedulers.get_<name>``; its own ``sqrt_decay`` jumps at the
end of warm-up (it lacks the sqrt(warmup) factor), so ``inverse_sqrt_schedule_with_warmup`` is added:
linear warm-up to the configured lr, then ``lr * sqrt(warmup / step)``.
"""
import math

from torch.optim.lr_scheduler import LambdaLR


def get_inverse_sqrt_schedule_with_warmup(optimizer, num_warmup_steps, num_training_steps=None, last_epoch=-1):
    warmup = max(1, int(num_warmup_steps))

    def factor(step: int) -> float:
        return (step + 1) / warmup if step < warmup else math.sqrt(warmup / max(step, 1))

    return LambdaLR(optimizer, factor, last_epoch)


def register() -> None:
    import s3prl.schedulers as s
    if not hasattr(s, "get_inverse_sqrt_schedule_with_warmup"):
        s.get_inverse_sqrt_schedule_with_warmup = get_inverse_sqrt_schedule_with_warmup
