import numpy as np
import pytest

from cvxattn.data import load_image_folder

Image = pytest.importorskip("PIL.Image")


def save(path, pixels, mode=None, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path, **options) if mode else \
        Image.fromarray(pixels).save(path, **options)
    return path


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)      # (H, W, 3)
    grey = rng.integers(0, 256, size=(6, 4), dtype=np.uint8)        # (H, W)
    rgba = rng.integers(0, 256, size=(3, 2, 4), dtype=np.uint8)     # (H, W, 4)
    smooth = np.full((8, 9, 3), 120, dtype=np.uint8)
    save(tmp_path / "zebra" / "b.png", rgb)
    save(tmp_path / "zebra" / "a.PNG", grey)
    save(tmp_path / "apple" / "x.png", rgba)
    save(tmp_path / "apple" / "y.jpeg", smooth, quality=95)
    save(tmp_path / "apple" / "z.jpg", grey)
    (tmp_path / "apple" / ".DS_Store").write_bytes(b"hidden")
    (tmp_path / ".cache").mkdir()

    data = load_image_folder(tmp_path)
    assert (data.name, data.split, data.source) == ("folder", "all", str(tmp_path))
    assert data.classes == ("apple", "zebra") and data.labels.tolist() == [0, 0, 0, 1, 1]
    x, y, z, a, b = data.images
    np.testing.assert_array_equal(x, rgba[..., :3])
    assert y.shape == (8, 9, 3) and np.abs(y.astype(int) - 120).max() <= 2
    assert z.shape == (6, 4) and np.abs(z.astype(int) - grey).mean() < 20  # lossy grey JPEG
    np.testing.assert_array_equal(a, grey)
    np.testing.assert_array_equal(b, rgb)
    assert all(image.dtype == np.uint8 and image.flags.writeable for image in data.images)
    assert data.subset([4]).images[0].shape == (5, 7, 3)


def test_palette_and_16_bit_grey(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[:2] = (255, 0, 0)
    Image.fromarray(rgb).convert("P").save(save(tmp_path / "c" / "p.png", rgb))
    save(tmp_path / "c" / "q.png", np.full((3, 5), 0x1234, dtype=np.uint16))
    p, q = load_image_folder(tmp_path).images
    np.testing.assert_array_equal(p, rgb)
    assert q.shape == (3, 5) and (q == 0x12).all()


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="root: expected a directory, found nothing at"):
        load_image_folder(tmp_path / "absent")
    with pytest.raises(ValueError, match="root: expected class folders with images in .*, got "
                                         "an empty folder"):
        load_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match="root: expected images in class folder .*cat, got an "
                                         "empty folder"):
        load_image_folder(tmp_path)
    (tmp_path / "cat" / "broken.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match="broken.png: expected an image Pillow can read, got "
                                         "UnidentifiedImageError"):
        load_image_folder(tmp_path)
    good = save(tmp_path / "cat" / "broken.png", np.zeros((40, 40, 3), np.uint8))
    good.write_bytes(good.read_bytes()[:60])
    with pytest.raises(ValueError, match="broken.png: expected an image Pillow can read"):
        load_image_folder(tmp_path)
    good.unlink()
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes.txt: expected a .png/.jpg/.jpeg image file, "
                                         "got another kind of file"):
        load_image_folder(tmp_path)
    (tmp_path / "cat" / "notes.txt").unlink()
    save(tmp_path / "cat" / "a.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "labels.csv").write_text("a,b")
    with pytest.raises(ValueError, match=r"root: expected only class folders in .*, got files "
                                         r"\['labels.csv'\]"):
        load_image_folder(tmp_path)
