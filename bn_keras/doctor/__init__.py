"""The BN doctor: finds what is wrong with a model's BN layers, says what it costs and how
to fix it, and repairs what needs no code change.

    import bn_keras
    diagnosis = bn_keras.diagnose_batch_norm(model, data=(x_val, y_val))
    print(diagnosis.summary())

- `diagnosis`: `diagnose_batch_norm` (the checks, listed there) and `repair_batch_norm`;
- `findings`: what they return: `Diagnosis`, `Finding`, `Severity`, `Measurement`,
  `Repair`, each written as JSON and read back;
- `structure`: how BN layers sit in the model (called? used? right axis? a bias before?
  frozen?);
- `weights`: what they hold (statistics never updated or mostly initial, non-finite,
  collapsed channels, gamma near zero) and the batch size they were trained at;
- `measurement`: the data checks (moving against re-estimated statistics, training
  against inference mode);
- `thresholds`: where errors and warnings begin, with the measurements behind them.

Names load their module on first use.
"""

from bn_keras import lazy

_PUBLIC = {
    "diagnose_batch_norm": "bn_keras.doctor.diagnosis",
    "repair_batch_norm": "bn_keras.doctor.diagnosis",
    "Diagnosis": "bn_keras.doctor.findings",
    "Finding": "bn_keras.doctor.findings",
    "Measurement": "bn_keras.doctor.findings",
    "Repair": "bn_keras.doctor.findings",
    "Severity": "bn_keras.doctor.findings",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy.exports(__name__, globals(), _PUBLIC)
