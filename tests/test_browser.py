"""End to end in real headless Chromium: the app as a user meets it, started with ``streamlit run``.

Starts the server on a free loopback port, opens Home, goes to Feature maps through the sidebar,
steps one layer with the Next button, and checks that the layer label changed and that no error is
shown. A screenshot goes to ``runs/screenshots/`` (git-ignored). Needs Debian's ``chromium`` and
``chromium-driver`` (``scripts/test.sh`` installs them).
"""

from pathlib import Path

import pytest

from scripts.screenshots import chrome, click_button, errors_shown, serve, wait_for_text

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def layer_label(driver) -> str:
    from selenium.webdriver.common.by import By

    return next(label.text for label in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stWidgetLabel"]')
                if label.text.startswith("Step "))


def test_home_to_feature_maps_and_step_a_layer():
    from selenium.webdriver.common.by import By

    shots = ROOT / "runs" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with serve() as url, chrome(height=1400) as driver:
        driver.get(url)
        wait_for_text(driver, "Knowledge distillation explorer")
        assert "not for diagnosis" in driver.find_element(By.TAG_NAME, "body").text
        assert not errors_shown(driver)

        nav = [a for a in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stSidebarNavLink"]')
               if a.text.strip().splitlines()[-1:] == ["Feature maps"]]  # the text starts with the icon's name
        assert nav, "no Feature maps link in the sidebar"
        nav[0].click()
        wait_for_text(driver, "Step 1 of")
        before = layer_label(driver)
        assert "/feature_maps" in driver.current_url

        click_button(driver, "Next")
        wait_for_text(driver, "Step 2 of")
        after = layer_label(driver)
        driver.save_screenshot(str(shots / "feature_maps_e2e.png"))

        assert before.startswith("Step 1 of") and after.startswith("Step 2 of") and after != before
        assert "layer=2" in driver.current_url, driver.current_url
        assert not errors_shown(driver), errors_shown(driver)


def test_switching_dataset_after_explain_never_shows_the_old_maps():
    import time

    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with serve() as url, chrome(height=1400) as driver:
        driver.get(f"{url}/explanations?dataset=phantom&image=0&method=feature_maps")
        wait_for_text(driver, "computed for phantom")  # a cheap method: explained as the page opens
        assert not errors_shown(driver), errors_shown(driver)

        picker = driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"] [data-testid="stSelectbox"] input')
        picker.click()
        picker.send_keys("brain_tumor")
        picker.send_keys(Keys.ENTER)
        deadline = time.time() + 180
        while "dataset=brain_tumor" not in driver.current_url and time.time() < deadline:
            time.sleep(0.5)
        wait_for_text(driver, "computed for brain_tumor")
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "dataset=brain_tumor" in driver.current_url, driver.current_url
        assert "computed for phantom" not in body, "the phantom maps are still shown for a brain_tumor image"
        assert not errors_shown(driver), errors_shown(driver)


def explained_lines(driver) -> list[str]:
    """What a session's Explanations page says it computed: the 'computed for' caption and each model's top 3."""
    from selenium.webdriver.common.by import By

    body = driver.find_element(By.TAG_NAME, "body").text
    return [line for line in body.splitlines() if "computed for" in line or "top 3:" in line]


def test_two_sessions_on_different_datasets_see_what_they_would_see_alone():
    """Two browser sessions of one server explain an image of another dataset each, first one after the other,
    then at the same time: each sees the same result both times, and nothing of the other's."""
    links = {"phantom": "explanations?dataset=phantom&image=3&method=grad_cam,feature_maps",
             "brain_tumor": "explanations?dataset=brain_tumor&image=2&method=grad_cam,feature_maps"}
    with serve() as url, chrome(height=1400) as first, chrome(height=1400) as second:
        drivers = dict(zip(links, (first, second)))
        alone = {}
        for name, driver in drivers.items():
            driver.get(f"{url}/{links[name]}")  # cheap methods: explained as the page opens
            wait_for_text(driver, f"computed for {name}")
            alone[name] = explained_lines(driver)
        for name, driver in drivers.items():  # fresh sessions, both explaining at once as they open
            driver.get(f"{url}/{links[name]}")
        together = {}
        for name, driver in drivers.items():
            wait_for_text(driver, f"computed for {name}")
            together[name] = explained_lines(driver)
            assert not errors_shown(driver), errors_shown(driver)
        for name, other in (("phantom", "brain_tumor"), ("brain_tumor", "phantom")):
            assert together[name] == alone[name] and len(alone[name]) == 3, (name, alone[name], together[name])
            assert not any(f"computed for {other}" in line for line in together[name])


def test_training_in_one_session_leaves_what_another_session_computes_unchanged():
    """One session trains on the Train page (in the background worker, with live curves and a Stop button) while
    another explains an image: the explanation is the one it gets alone, and the stopped run leaves no results."""
    link = "explanations?dataset=phantom&image=3&method=grad_cam,feature_maps"
    shots = ROOT / "runs" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with serve() as url, chrome(height=1000) as trainer, chrome(height=1400) as other:
        other.get(f"{url}/{link}")  # cheap methods: explained as the page opens
        wait_for_text(other, "computed for phantom")
        alone = explained_lines(other)

        trainer.get(f"{url}/train?dataset=phantom")
        wait_for_text(trainer, "Press Train")
        click_button(trainer, "Train")
        wait_for_text(trainer, "Training runs in its own process")
        wait_for_text(trainer, "Training Teacher: epoch")  # the worker has started the teacher

        other.get(f"{url}/{link}")
        wait_for_text(other, "computed for phantom")
        assert explained_lines(other) == alone and len(alone) == 3, (alone, explained_lines(other))
        assert not errors_shown(other), errors_shown(other)

        trainer.save_screenshot(str(shots / "train_live.png"))
        click_button(trainer, "Stop training")
        wait_for_text(trainer, "Press Train")
        assert not errors_shown(trainer), errors_shown(trainer)


def checked_option(driver, label: str) -> str:
    """The selected option of the radio group labelled ``label``."""
    from selenium.webdriver.common.by import By

    for group in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stRadio"]'):
        if group.text.strip().splitlines()[:1] == [label]:
            for option in group.find_elements(By.CSS_SELECTOR, "label"):
                if option.find_elements(By.CSS_SELECTOR, "input:checked"):
                    return option.text.strip()
    raise LookupError(f"no radio group labelled {label!r} with a checked option")


def test_the_model_choice_on_feature_maps_survives_an_upload(tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    upload = tmp_path / "grey16.png"
    Image.radial_gradient("L").resize((96, 96)).convert("I;16").save(upload)
    with serve() as url, chrome(height=1400) as driver:
        driver.get(f"{url}/feature_maps?dataset=phantom&model=student&source=Upload")
        wait_for_text(driver, "Upload an image")
        driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(upload))
        wait_for_text(driver, "grey16.png")
        wait_for_text(driver, "Channels that drive the decision")
        assert checked_option(driver, "Model") == "student", checked_option(driver, "Model")
        assert "model=student" in driver.current_url, driver.current_url
        assert not errors_shown(driver), errors_shown(driver)


def test_the_answer_is_in_the_first_screen_of_a_laptop_and_follows_the_dataset():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    width, height = 1366, 768
    with serve() as url, chrome(width=width, height=height) as driver:
        said = {}
        for page in ("compare", "timing", "faithfulness", "explanations"):  # Explanations: its cheap maps at once
            for dataset in ("phantom", "brain_tumor"):
                driver.get(f"{url}/{page}?dataset={dataset}")
                answer = WebDriverWait(driver, 180).until(  # a cold server loads torch and the models first
                    expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".st-key-answer")))
                wait_for_text(driver, answer.text.split(":")[0][:40])
                top = driver.execute_script("return arguments[0].getBoundingClientRect().top", answer)
                assert answer.text.strip() and 0 <= top < height - 40, (page, dataset, top)  # a line of it shows
                said[page, dataset] = answer.text
                assert not errors_shown(driver), (page, dataset, errors_shown(driver))
        driver.save_screenshot(str(ROOT / "runs" / "answer_1366.png"))
        for page in ("compare", "timing", "faithfulness", "explanations"):
            assert said[page, "phantom"] != said[page, "brain_tumor"], page


def test_a_cold_server_says_what_the_first_page_is_doing_before_it_has_drawn():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    with serve() as url, chrome(width=1366, height=768) as driver:
        driver.get(f"{url}/compare?dataset=phantom")  # a deep link: the first page the server shows loads torch
        WebDriverWait(driver, 30).until(expected_conditions.text_to_be_present_in_element(
            (By.TAG_NAME, "body"), "Opening Teacher vs student"))
        WebDriverWait(driver, 180).until(
            expected_conditions.visibility_of_element_located((By.CSS_SELECTOR, ".st-key-answer")))
        wait_for_text(driver, "Architecture")
        assert "Opening Teacher vs student" not in driver.find_element(By.TAG_NAME, "body").text
        assert not errors_shown(driver)


def test_feature_maps_steps_and_both_maps_fit_a_laptop_screen_on_arrival():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with serve() as url, chrome(width=1366, height=768) as driver:
        driver.get(f"{url}/feature_maps?dataset=phantom")
        wait_for_text(driver, "Step 1 of")
        screen = driver.execute_script("return window.innerHeight")
        bottom = lambda element: driver.execute_script(  # noqa: E731
            "return arguments[0].getBoundingClientRect().bottom", element)
        [next_button] = [b for b in driver.find_elements(By.TAG_NAME, "button") if "Next" in b.text.split()]
        maps = driver.find_elements(By.CSS_SELECTOR, ".st-key-fm_map_teacher, .st-key-fm_map_student")
        charts = maps or driver.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"]')[:2]
        assert len(charts) == 2 and bottom(next_button) <= screen
        assert all(bottom(chart) <= screen + 8 for chart in charts), [bottom(c) for c in charts]  # the colour bar's foot
        driver.save_screenshot(str(ROOT / "runs" / "feature_maps_1366.png"))
        # the arrow keys step too (a slider with the focus takes them itself: one step, not two)
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_RIGHT)
        wait_for_text(driver, "Step 2 of")
        assert "layer=2" in driver.current_url, driver.current_url
        driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT)
        wait_for_text(driver, "Step 1 of")
        assert "layer=1" in driver.current_url, driver.current_url


def test_the_lesson_runs_on_every_dataset_stepped_by_a_presenters_clicker():
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from explorer.lesson_view import STEPS

    with serve() as url, chrome(width=1366, height=768) as driver:
        said = {}
        for dataset in ("phantom", "brain_tumor", "eye_disease", "alzheimer"):
            driver.get(f"{url}/lesson?dataset={dataset}")
            wait_for_text(driver, f"Step 1 of {len(STEPS)}", timeout=180)  # a cold server loads torch first
            for number in range(2, len(STEPS) + 1):
                driver.find_element(By.TAG_NAME, "body").send_keys(Keys.PAGE_DOWN)  # what a clicker sends
                wait_for_text(driver, f"Step {number} of {len(STEPS)}: {STEPS[number - 1].title}", timeout=120)
                assert f"step={number}" in driver.current_url, driver.current_url
                assert not errors_shown(driver), (dataset, number, errors_shown(driver))
            text = driver.find_element(By.CSS_SELECTOR, ".st-key-lesson_text")
            top = driver.execute_script("return arguments[0].getBoundingClientRect().top", text)
            assert text.text.strip() and 0 <= top < driver.execute_script("return window.innerHeight") - 40, top
            said[dataset] = text.text
            driver.save_screenshot(str(ROOT / "runs" / f"lesson_{dataset}_1366.png"))
        assert len(set(said.values())) == 4  # the last step's sentences come from each dataset's own images


def test_an_unfamiliar_upload_is_warned_of_in_the_first_screen_below_the_uploader(tmp_path):
    import numpy as np
    from PIL import Image
    from selenium.webdriver.common.by import By

    upload = tmp_path / "holiday.png"  # a colourful photograph-like picture, nothing like an MRI slice
    rng = np.random.default_rng(0)
    sky = np.linspace([40, 120, 230], [250, 200, 120], 160)[:, None, :].repeat(200, axis=1)
    Image.fromarray(np.clip(sky + rng.normal(0, 25, sky.shape), 0, 255).astype(np.uint8)).save(upload)
    with serve() as url, chrome(width=1366, height=768) as driver:
        driver.get(f"{url}/dataset?dataset=brain_tumor&source=Upload")
        wait_for_text(driver, "Upload an image", timeout=180)
        uploader = driver.find_element(By.CSS_SELECTOR, '[data-testid="stFileUploader"]')
        driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(upload))
        wait_for_text(driver, "is unlike the brain_tumor training images", timeout=180)
        [warning] = [w for w in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stAlert"]')
                     if "unlike the brain_tumor training images" in w.text]
        box = lambda element: driver.execute_script(  # noqa: E731
            "return arguments[0].getBoundingClientRect()", element)
        screen = driver.execute_script("return window.innerHeight")
        # the screen a user sees with the uploader they just used at its top: the warning is in it, below
        driver.execute_script("arguments[0].scrollIntoView({block: 'start'})", uploader)
        assert box(uploader)["bottom"] <= box(warning)["top"] and box(warning)["bottom"] <= screen, \
            (box(uploader), box(warning), screen)
        assert not errors_shown(driver), errors_shown(driver)
        driver.save_screenshot(str(ROOT / "runs" / "unfamiliar_upload_1366.png"))


def test_a_zip_of_the_users_images_uploaded_on_the_train_page_becomes_the_chosen_dataset(tmp_path):
    import zipfile

    from selenium.webdriver.common.by import By

    from tests.test_archive import classes

    upload = tmp_path / "upload.zip"
    with zipfile.ZipFile(upload, "w") as z:
        for name, data in classes("holiday_snaps/", n=10, names=("beach", "city", "snow")).items():
            z.writestr(name, data)
    env = {"KD_DATA_ROOT": str(tmp_path / "data"), "KD_CHECKPOINTS": str(tmp_path / "models")}
    with serve(env=env) as url, chrome(width=1366, height=768) as driver:
        driver.get(f"{url}/train?dataset=phantom")
        wait_for_text(driver, "Your own images: upload a zip", timeout=180)
        [expander] = [e for e in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stExpander"] summary')
                      if "upload a zip" in e.text]
        expander.click()
        from selenium.webdriver.support.ui import WebDriverWait
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, 'input[type="file"]'))
        driver.find_element(By.CSS_SELECTOR, 'input[type="file"]').send_keys(str(upload))
        wait_for_text(driver, "holiday_snaps added (3 classes", timeout=180)
        assert "dataset=holiday_snaps" in driver.current_url, driver.current_url  # chosen in the picker
        assert (tmp_path / "data" / "holiday_snaps" / "snow").is_dir()
        assert not errors_shown(driver), errors_shown(driver)
        driver.save_screenshot(str(ROOT / "runs" / "own_data_upload_1366.png"))
