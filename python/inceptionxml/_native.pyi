"""Type stubs of the Rust extension module (python/src/lib.rs); use the `inceptionxml` package."""

from typing import Any, Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

__version__: str

class NativeModel:
    @staticmethod
    def load(
        paths: Sequence[str], *, threads: Optional[int] = None, exact: bool = False, device: str = "cpu"
    ) -> "NativeModel": ...
    def labels(self) -> tuple[list[str], list[str]]: ...
    @property
    def n_labels(self) -> int: ...
    @property
    def dirs(self) -> list[str]: ...
    def predict(
        self, texts: Sequence[str], k: int, threshold: float, batch_size: int, score: Optional[str] = None
    ) -> list[list[tuple[str, str, float]]]: ...
    def predict_topk(
        self, texts: Sequence[str], k: int, batch_size: int, score: Optional[str] = None
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]: ...
    def predict_csr_parts(
        self, texts: Sequence[str], k: int, threshold: float, batch_size: int, score: Optional[str] = None
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], npt.NDArray[np.float32]]: ...
    def explain(
        self, texts: Sequence[str], k: int, threshold: float, batch_size: int, score: Optional[str] = None
    ) -> list[list[tuple[str, str, float, list[tuple[str, float]]]]]: ...
    def save(self, path: str, overwrite: bool = False) -> None: ...
    def time_rank(self, texts: Sequence[str], k: int, repeats: int) -> float: ...

def train(
    model_dir: str,
    *,
    data_dir: Optional[str] = None,
    texts: Optional[Sequence[str]] = None,
    labels: Optional[Sequence[Sequence[int]]] = None,
    n_labels: Optional[int] = None,
    label_names: Optional[Sequence[str]] = None,
    label_uris: Optional[Sequence[Optional[str]]] = None,
    test_texts: Optional[Sequence[str]] = None,
    test_labels: Optional[Sequence[Sequence[int]]] = None,
    options: Optional[dict[str, Any]] = None,
    on_event: Optional[Callable[[dict[str, Any]], Any]] = None,
) -> dict[str, Any]: ...
def train_defaults() -> dict[str, Any]: ...
